-- Argo CD health check for Lifeboat's kinds (group lifeboat.dev): DatabaseEnvironment, MigrationRun,
-- BackupSchedule, RestoreDrill. It follows kstatus: a status the operator has not caught up with, or one that
-- says Reconciling, is Progressing; Stalled is Degraded; Ready is Healthy. MigrationRun's terminal phases are
-- final: Succeeded is Healthy, Failed and RolledBack are Degraded.
-- Written for Argo CD's interpreter (gopher-lua, Lua 5.1): `obj` is the live object, the script returns `hs`.
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.type .. ": " .. c.reason
  end
  return fallback
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if obj.kind == "MigrationRun" then
  if status.phase == "Succeeded" then
    hs.status = "Healthy"
    hs.message = describe(condition(status, "Ready") or {}, "Migration succeeded")
    return hs
  end
  if status.phase == "Failed" or status.phase == "RolledBack" then
    local c = condition(status, "Stalled") or condition(status, "Ready") or {}
    hs.status = "Degraded"
    hs.message = describe(c, "Migration " .. status.phase)
    return hs
  end
end

local stalled = condition(status, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if obj.kind == "BackupSchedule" and obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Backups are suspended"
  return hs
end

local reconciling = condition(status, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

if obj.kind == "RestoreDrill" then
  local objectives = condition(status, "ObjectivesMet")
  if objectives ~= nil and objectives.status == "False" then
    hs.status = "Degraded"
    hs.message = describe(objectives, "Recovery objectives not met")
    return hs
  end
end

local ready = condition(status, "Ready")
if is_true(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready, "Not ready yet")
else
  hs.message = "Waiting for the Ready condition"
end
return hs
