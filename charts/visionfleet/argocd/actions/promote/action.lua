-- Argo CD resource action "promote" for visionfleet.io/VisionDeployment: promote the canary in
-- flight now, skipping the remaining steps, pauses and analysis (`kubectl vision promote`; Argo
-- Rollouts' promote-full). It sets the one-shot annotation visionfleet.io/promote to a new value;
-- the operator acts on each new value once (it waits for the canary's pods to be Ready, then sends
-- it 100 %) and records it in status.handledPromote. Refused, as discovery.lua disables it, while
-- no canary is in flight (status.canaryRevision unset).
--
-- The value: the UTC time to the second (os.date; Argo CD's Lua has no finer clock) and the
-- object's resourceVersion, e.g. "2026-11-28T12:00:00Z argocd rv4711". Each click changes the
-- object, so the next click reads another resourceVersion; should two clicks ever read the same
-- version within one second, " #2" (" #3", ...) is appended until the value differs from the
-- annotation and from the value the operator last handled, so every click sends a new value.

local os = require("os")
local st = obj.status or {}
if st.canaryRevision == nil or st.canaryRevision == "" then
  error("no canary in flight (phase " .. tostring(st.phase or "unknown") .. "): nothing to promote", 0)
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
while value == ann["visionfleet.io/promote"] or value == st.handledPromote do
  n = n + 1
  value = base .. " #" .. tostring(n)
end
ann["visionfleet.io/promote"] = value
return obj
