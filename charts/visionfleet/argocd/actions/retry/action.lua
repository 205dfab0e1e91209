-- Argo CD resource action "retry" for visionfleet.io/VisionDeployment: re-attempt the revision the
-- spec asks for, without a spec change, after its newest outcome was RolledBack, Aborted or
-- CompileFailed (`kubectl vision retry`; Argo Rollouts' retry). It sets the one-shot annotation
-- visionfleet.io/retry to a new value; the operator acts on each new value once (history outcome
-- Retried, a new canary of that revision) and records it in status.handledRetry.
--
-- The status does not carry the revision the spec asks for; the phase is the operator's verdict on
-- its newest outcome (RolledBack for RolledBack/Aborted, Failed for CompileFailed). Refused, as
-- discovery.lua disables it, unless the phase is RolledBack or Failed, no canary is in flight and
-- the status is of the current generation (a newer spec is rolled out anyway).
--
-- The value: the UTC time to the second (os.date; Argo CD's Lua has no finer clock) and the
-- object's resourceVersion, e.g. "2026-11-28T12:00:00Z argocd rv4711". Each click changes the
-- object, so the next click reads another resourceVersion; should two clicks ever read the same
-- version within one second, " #2" (" #3", ...) is appended until the value differs from the
-- annotation and from the value the operator last handled, so every click sends a new value.

local os = require("os")
local md = obj.metadata
local st = obj.status or {}
local generation = tonumber(md.generation)
local observed = tonumber(st.observedGeneration)
if st.canaryRevision ~= nil and st.canaryRevision ~= "" then
  error("a canary is in flight (revision " .. tostring(st.canaryRevision) .. "): nothing to retry", 0)
end
if observed == nil or (generation ~= nil and observed < generation) then
  error("the operator has not observed generation " .. tostring(generation) .. " yet: nothing to retry", 0)
end
if st.phase ~= "RolledBack" and st.phase ~= "Failed" then
  error("nothing to retry (phase " .. tostring(st.phase or "unknown") .. "): retry re-attempts the revision " ..
    "the spec asks for only when its newest outcome is RolledBack, Aborted or CompileFailed", 0)
end

local ann = obj.metadata.annotations
if ann == nil then
  ann = {}
  obj.metadata.annotations = ann
end
local base = os.date("!%Y-%m-%dT%H:%M:%SZ") .. " argocd rv" ..
  tostring(obj.metadata.resourceVersion or obj.metadata.generation or 0)
local value = base
local n = 1
while value == ann["visionfleet.io/retry"] or value == st.handledRetry do
  n = n + 1
  value = base .. " #" .. tostring(n)
end
ann["visionfleet.io/retry"] = value
return obj
