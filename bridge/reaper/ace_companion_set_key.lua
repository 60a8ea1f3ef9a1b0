-- ace_companion_set_key.lua: store the project key for ACE Companion (REAPER has no project key).
-- Saved in the .rpp as project ExtState "ace_companion"/"key", e.g. "A minor" or "F# major".
local _, current = reaper.GetProjExtState(0, "ace_companion", "key")
local ok, key = reaper.GetUserInputs("ACE Companion: project key", 1, "Key (e.g. A minor, Bb major):", current or "")
if ok then
  key = key:gsub("^%s+", ""):gsub("%s+$", "")
  reaper.SetProjExtState(0, "ace_companion", "key", key)
  reaper.MarkProjectDirty(0)
end
