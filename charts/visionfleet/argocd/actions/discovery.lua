-- Argo CD resource actions for visionfleet.io/VisionDeployment (v1alpha1): which are enabled now.
--
-- Installed with the action scripts under the argocd-cm key
-- resource.customizations.actions.visionfleet.io_VisionDeployment (see ../README.md; the
-- argocd-cm-patch.yaml next to it embeds this file and each <action>/action.lua byte for byte, and
-- tests/unit/test_argocd_actions.py checks that and runs them on statuses the planner wrote).
--
-- Every action only sets or removes one annotation on the VisionDeployment, as `kubectl vision`
-- does; the operator acts on it on its next pass (it never writes spec, so neither do we):
--
--   promote  visionfleet.io/promote=<new value>  enabled while a canary is in flight
--                                                 (status.canaryRevision set)
--   abort    visionfleet.io/abort=<new value>    enabled while a canary is in flight (compiling too)
--   pause    visionfleet.io/paused="true"        enabled while a canary is in flight and not paused
--   resume   visionfleet.io/paused removed       enabled while visionfleet.io/paused is "true"
--   retry    visionfleet.io/retry=<new value>    enabled while the phase is RolledBack or Failed
--                                                 (the newest outcome of the revision the spec asks
--                                                 for is RolledBack, Aborted or CompileFailed) and
--                                                 the status is of the current generation
--
-- Dialect: Lua 5.1 on gopher-lua, with only the base, table, package and a "safe" os library
-- (os.time and os.date, through require("os")): no string.*, no s:find(), no math.*, no goto.

local actions = {}
local md = obj.metadata or {}
local st = obj.status or {}
local ann = md.annotations or {}

local canary = st.canaryRevision ~= nil and st.canaryRevision ~= ""
local paused = ann["visionfleet.io/paused"] == "true"
local generation = tonumber(md.generation)
local observed = tonumber(st.observedGeneration)
local current = observed ~= nil and (generation == nil or observed >= generation)
local failed = (not canary) and current and (st.phase == "RolledBack" or st.phase == "Failed")

actions["promote"] = {
  ["disabled"] = not canary,
  ["iconClass"] = "fa fa-fw fa-forward",
  ["displayName"] = "Promote (full)"
}
actions["abort"] = {
  ["disabled"] = not canary,
  ["iconClass"] = "fa fa-fw fa-times-circle",
  ["displayName"] = "Abort"
}
actions["retry"] = {
  ["disabled"] = not failed,
  ["iconClass"] = "fa fa-fw fa-redo",
  ["displayName"] = "Retry"
}
actions["pause"] = {
  ["disabled"] = (not canary) or paused,
  ["iconClass"] = "fa fa-fw fa-pause-circle",
  ["displayName"] = "Pause"
}
actions["resume"] = {
  ["disabled"] = not paused,
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["displayName"] = "Resume"
}
return actions
