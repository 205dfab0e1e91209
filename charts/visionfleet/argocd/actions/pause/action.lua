-- Argo CD resource action "pause" for visionfleet.io/VisionDeployment: hold the rollout at its
-- current step (`kubectl vision pause`; Argo Rollouts' pause). It sets visionfleet.io/paused="true"
-- (a level, not one-shot: nothing changes when it is already "true"). Analysis keeps running while
-- paused, so a failing canary is still rolled back. discovery.lua enables it while a canary is in
-- flight and not paused; run with no canary (argocd app actions run), the next rollout holds at
-- its first step, as with `kubectl vision pause`.

local ann = obj.metadata.annotations
if ann == nil then
  ann = {}
  obj.metadata.annotations = ann
end
ann["visionfleet.io/paused"] = "true"
return obj
