-- Argo CD resource action "resume" for visionfleet.io/VisionDeployment: release a paused rollout
-- (`kubectl vision resume`; Argo Rollouts' resume). It removes visionfleet.io/paused; nothing
-- changes when it is not set. discovery.lua enables it while the annotation is "true".
--
-- Argo CD turns the returned object into a JSON merge patch against the live one. A table left
-- empty does not encode as {}: gopher-json writes [] (which Argo CD then replaces with the live
-- map, annotation and all) or null, depending on the version. So when paused was the only
-- annotation, the whole map is dropped, which patches metadata.annotations to null.

local md = obj.metadata
if md.annotations ~= nil and md.annotations["visionfleet.io/paused"] ~= nil then
  md.annotations["visionfleet.io/paused"] = nil
  if next(md.annotations) == nil then
    md.annotations = nil
  end
end
return obj
