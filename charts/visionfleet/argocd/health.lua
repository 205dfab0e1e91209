-- Argo CD health check for visionfleet.io/VisionDeployment (v1alpha1).
--
-- Installed under the argocd-cm key resource.customizations.health.visionfleet.io_VisionDeployment
-- (see README.md next to this file; argocd-cm-patch.yaml embeds this file byte for byte, and
-- tests/unit/test_argocd_health.py checks that and runs this script on statuses the planner wrote).
--
-- Dialect: Argo CD runs it on gopher-lua (Lua 5.1) with only the base, table and a "safe" os
-- library: a custom health check gets no string or math library unless
-- resource.customizations.useOpenLibs is set. So: no string.*, no s:find(), no math.*, no goto,
-- no //; text is built with .. and tostring() only.
--
-- The operator derives status.phase from the rest of its status (planner/phases.py) and writes
-- only status. This script reads, in this order:
--
--   no status, or metadata.generation > status.observedGeneration  -> Progressing
--       "waiting for the operator to observe generation N"
--   condition Degraded=True with reason InvalidSpec                  -> Degraded (its message)
--   status.phase:
--     Healthy      -> Healthy      stable revision; warnings (still Healthy) for InputDrift=True,
--                                  Degraded=True (compile failed or no nodes on some class),
--                                  Available=False, and a last revision that failed to compile
--     Paused       -> Suspended    by the visionfleet.io/paused annotation (Paused reason
--                                  PausedByUser) or by an inconclusive analysis
--                                  (AnalysisInconclusive); message has status.analysis.reason
--     Pending      -> Progressing
--     Compiling    -> Progressing  revision, compile state per class
--     Verifying    -> Progressing  canary pods starting (step, canary weight)
--     RollingOut   -> Progressing  step, canary weight, wave, last analysis verdict and reason
--     RollingBack  -> Progressing  canary objects being removed after a rollback or an abort
--     RolledBack   -> Degraded     the last history entry's reason: the spec still asks for the
--                                  revision that was rolled back, which is not retried on its own
--                                  (visionfleet.io/retry, the retry action, or a spec change)
--     Failed       -> Degraded     the revision the spec asks for compiled on no class (a stable
--                                  revision, if any, keeps serving; not retried on its own either)
--     no phase     -> Progressing
--     other        -> Progressing  "unknown phase X" (an operator newer than this script)
--
-- Why Paused is Suspended in both cases: Argo Rollouts pauses a Rollout for a user pause and for an
-- inconclusive analysis alike (a pause condition, reason InconclusiveAnalysis for the latter), and
-- Argo CD's bundled Rollout health check reports Suspended for any pause condition. We do the same,
-- so a VisionDeployment reads like a Rollout in the Argo CD UI. The difference worth knowing: our
-- inconclusive pause does not wait for a human alone. The operator keeps measuring and a Passed
-- analysis resumes the steps; only with spec.analysis.onInconclusive: Rollback does the limit roll
-- the canary back (then RolledBack -> Degraded). The message says which pause it is.

local function condition(st, kind)
  if st.conditions == nil then
    return nil
  end
  for _, c in ipairs(st.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function text(v)
  if v == nil then
    return "?"
  end
  return tostring(v)
end

local function lastHistory(st)
  if st.history == nil or #st.history == 0 then
    return nil
  end
  return st.history[#st.history]
end

-- "step 1, canary weight 50%, wave 1" from what the status carries.
local function canaryPosition(st)
  local parts = {}
  if st.step ~= nil then
    table.insert(parts, "step " .. tostring(st.step))
  end
  if st.canaryWeight ~= nil then
    table.insert(parts, "canary weight " .. tostring(st.canaryWeight) .. "%")
  end
  if st.wave ~= nil and st.wave > 0 then
    table.insert(parts, "wave " .. tostring(st.wave))
  end
  return table.concat(parts, ", ")
end

local function analysisText(st)
  local a = st.analysis
  if a == nil then
    return nil
  end
  local out = "last analysis " .. text(a.verdict)
  if a.reason ~= nil and a.reason ~= "" then
    out = out .. ": " .. a.reason
  end
  return out
end

local function join(parts, sep)
  local kept = {}
  for _, p in ipairs(parts) do
    if p ~= nil and p ~= "" then
      table.insert(kept, p)
    end
  end
  return table.concat(kept, sep)
end

local hs = {}
local md = obj.metadata or {}
local st = obj.status
local generation = tonumber(md.generation)
local observed = nil
if st ~= nil then
  observed = tonumber(st.observedGeneration)
end

if observed == nil or (generation ~= nil and generation > observed) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  else
    hs.message = "waiting for the operator to observe the spec"
  end
  return hs
end

local degraded = condition(st, "Degraded")
if isTrue(degraded) and degraded.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = text(degraded.message)
  return hs
end

local phase = st.phase
local canary = text(st.canaryRevision)
local last = lastHistory(st)

if phase == "Healthy" then
  hs.status = "Healthy"
  local warnings = {}
  local drift = condition(st, "InputDrift")
  if isTrue(drift) then
    table.insert(warnings, "warning: input drift on the stable revision (InputDrift): " .. text(drift.message))
  end
  if isTrue(degraded) then
    table.insert(warnings, "warning: " .. text(degraded.message))
  end
  if last ~= nil and last.outcome == "CompileFailed" then
    table.insert(warnings, "warning: the last revision " .. text(last.revision) ..
      " failed to compile and is not retried until the spec changes: " .. text(last.reason))
  end
  local available = condition(st, "Available")
  if available ~= nil and available.status == "False" then
    table.insert(warnings, "warning: not available: " .. text(available.message))
  end
  hs.message = join({"serving stable revision " .. text(st.stableRevision), join(warnings, "; ")}, "; ")
  return hs
end

if phase == "Paused" then
  hs.status = "Suspended"
  local paused = condition(st, "Paused")
  local where = "revision " .. canary .. " held at " .. canaryPosition(st)
  if isTrue(paused) and paused.reason == "PausedByUser" then
    hs.message = join({"paused by the visionfleet.io/paused annotation (remove it to resume)", where,
      analysisText(st)}, "; ")
  elseif isTrue(paused) and paused.reason == "AnalysisInconclusive" then
    local count = ""
    if st.analysis ~= nil and st.analysis.inconclusive ~= nil then
      count = " (" .. tostring(st.analysis.inconclusive) .. " in a row"
      if st.analysis.errors ~= nil and st.analysis.errors > 0 then
        count = count .. ", " .. tostring(st.analysis.errors) .. " provider errors in a row"
      end
      count = count .. ")"
    end
    local reason = nil
    if st.analysis ~= nil then
      reason = st.analysis.reason
    end
    if reason == nil and paused ~= nil then
      reason = paused.message
    end
    hs.message = join({"paused: analysis inconclusive" .. count .. ": " .. text(reason), where,
      "a Passed analysis resumes the rollout"}, "; ")
  else
    hs.message = join({"paused", where, analysisText(st)}, "; ")
  end
  return hs
end

if phase == "RolledBack" then
  hs.status = "Degraded"
  local what = "rolled back"
  local rev = "?"
  local reason = "?"
  if last ~= nil then
    rev = text(last.revision)
    reason = text(last.reason)
    if last.outcome == "Aborted" then
      what = "aborted"
    end
  end
  hs.message = "revision " .. rev .. " " .. what .. ": " .. reason .. "; stable revision " ..
    text(st.stableRevision) .. " keeps serving; the spec still asks for " .. rev ..
    ", which is not retried on its own: retry it (Argo CD action retry, kubectl vision retry) or change " ..
    "the spec"
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  if last ~= nil and st.stableRevision ~= nil then
    hs.message = "revision " .. text(last.revision) .. " failed to compile on every class: " .. text(last.reason) ..
      "; stable revision " .. text(st.stableRevision) .. " keeps serving; the spec still asks for " ..
      text(last.revision) .. ", which is not retried on its own: retry it (Argo CD action retry, " ..
      "kubectl vision retry) or change the spec"
  elseif last ~= nil then
    hs.message = "revision " .. text(last.revision) .. " failed to compile on every class, nothing is serving: " ..
      text(last.reason)
  else
    hs.message = "failed: nothing is serving"
  end
  return hs
end

if phase == "Compiling" then
  hs.status = "Progressing"
  local classes = {}
  if st.classes ~= nil then
    for _, c in ipairs(st.classes) do
      if c.compile ~= nil and c.compile.revision == st.canaryRevision then
        local item = text(c.name) .. " " .. text(c.compile.state)
        if c.compile.message ~= nil and c.compile.message ~= "" then
          item = item .. " (" .. c.compile.message .. ")"
        end
        table.insert(classes, item)
      end
    end
  end
  local msg = "compiling revision " .. canary
  if #classes > 0 then
    msg = msg .. ": " .. table.concat(classes, ", ")
  end
  hs.message = msg
  return hs
end

if phase == "Verifying" then
  hs.status = "Progressing"
  if st.stableRevision == nil then
    hs.message = "first revision " .. canary .. ": waiting for its pods to become Ready"
  else
    hs.message = join({"revision " .. canary .. ": waiting for the canary pods to become Ready",
      canaryPosition(st)}, "; ")
  end
  return hs
end

if phase == "RollingOut" then
  hs.status = "Progressing"
  hs.message = join({"rolling out revision " .. canary, canaryPosition(st), analysisText(st)}, "; ")
  return hs
end

if phase == "RollingBack" then
  hs.status = "Progressing"
  if last ~= nil then
    hs.message = "rolling back revision " .. text(last.revision) .. " (" .. text(last.outcome) .. "): " ..
      text(last.reason)
  else
    hs.message = "rolling back"
  end
  return hs
end

if phase == "Pending" then
  hs.status = "Progressing"
  local progressing = condition(st, "Progressing")
  if progressing ~= nil and progressing.message ~= nil then
    hs.message = "pending: " .. progressing.message
  else
    hs.message = "pending: nothing to serve yet"
  end
  return hs
end

hs.status = "Progressing"
if phase == nil then
  hs.message = "waiting for the operator to set a phase"
else
  hs.message = "unknown phase " .. tostring(phase)
end
return hs
