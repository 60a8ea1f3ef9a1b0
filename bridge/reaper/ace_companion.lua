-- ace_companion.lua: the REAPER side of the ACE Companion bridge.
--
-- Run once per session (Actions > Show action list > Load ReaScript..., then run it; add it to
-- SWS startup actions if you like). It keeps running in the background (reaper.defer) and talks
-- to the bridge through a folder of small text files (REAPER's Lua has no sockets):
--
--   state.txt        written here: time selection, tempo/meter map, key, project, rate, track
--   cmd-<id>.txt     written by the bridge: command=render or command=insert, plus fields
--   cmd-<id>.done    written here: ok=1 (and path=) or error=<message>
--
-- The loop looks for commands every 0.1 s. To answer at once, register ace_companion_wake.lua
-- as an action too and give the bridge its command id (--reaper-wake-action _RS...): the bridge
-- then runs it over REAPER's OSC (/action/_RS...) right after dropping a command.
-- Renders are skipped when the project has not changed since the bridge's last render of the
-- same span (GetProjectStateChangeCount): the reply says unchanged=1 and the bridge reuses it.
--
-- The folder is ~/.ace-companion/reaper unless ExtState "ace_companion"/"mailbox" names another
-- (set it with reaper.SetExtState("ace_companion", "mailbox", "/some/folder", true)).
-- The project key is read from project ExtState "ace_companion"/"key" (saved in the .rpp); set it
-- with ace_companion_set_key.lua.

local EXT = "ace_companion"
local HEARTBEAT_S = 1.0
local POLL_S = 0.1

local function home_dir()
  return os.getenv("HOME") or os.getenv("USERPROFILE") or reaper.GetResourcePath()
end

local mailbox = reaper.GetExtState(EXT, "mailbox")
if mailbox == nil or mailbox == "" then
  mailbox = home_dir() .. "/.ace-companion/reaper"
end
reaper.RecursiveCreateDirectory(mailbox, 0)

-- ------------------------------------------------------------------ small file helpers
local function write_atomic(path, text)
  local tmp = path .. ".tmp"
  local fh = io.open(tmp, "wb")
  if not fh then return false end
  fh:write(text)
  fh:close()
  os.remove(path)            -- Windows cannot rename over an existing file
  return os.rename(tmp, path)
end

local function read_kv(path)
  local fh = io.open(path, "rb")
  if not fh then return nil end
  local fields = {}
  for line in fh:lines() do
    local key, value = line:match("^([%w_]+)=(.*)$")
    if key then fields[key] = value:gsub("\r$", "") end
  end
  fh:close()
  return fields
end

local function reply(id, text)
  write_atomic(mailbox .. "/cmd-" .. id .. ".done", text)
end

local function one_line(text)
  return tostring(text):gsub("[\r\n]+", " ")
end

-- ------------------------------------------------------------------ project state
local function project_sample_rate()
  if reaper.GetSetProjectInfo(0, "PROJECT_SRATE_USE", 0, false) > 0 then
    return math.floor(reaper.GetSetProjectInfo(0, "PROJECT_SRATE", 0, false))
  end
  local ok, rate = reaper.GetAudioDeviceInfo("SRATE")
  if ok then return tonumber(rate) or 0 end
  return 0
end

local function tempo_markers(lines)
  local count = reaper.CountTempoTimeSigMarkers(0)
  -- the project's tempo and meter before the first marker
  local num, den, bpm0 = reaper.TimeMap_GetTimeSigAtTime(0, 0)
  if count == 0 then
    lines[#lines + 1] = string.format("marker=0 %.6f %d %d", bpm0, num, den)
    return
  end
  for i = 0, count - 1 do
    -- retval, timepos, measurepos, beatpos, bpm, timesig_num, timesig_denom, lineartempo
    local ok, timepos, _, _, bpm, m_num, m_den = reaper.GetTempoTimeSigMarker(0, i)
    if ok then
      if i == 0 and timepos > 0 then
        -- before the first marker: the project meter, not the marker's (that starts at the marker)
        lines[#lines + 1] = string.format("marker=0 %.6f %d %d", bpm0, num, den)
      end
      if m_num and m_num > 0 then num, den = m_num, m_den end  -- 0 = meter unchanged here
      lines[#lines + 1] = string.format("marker=%.9f %.6f %d %d", timepos, bpm, num, den)
    end
  end
end

local function state_text()
  local lines = { "version=1", "change_count=" .. reaper.GetProjectStateChangeCount(0) }
  local sel_start, sel_end = reaper.GetSet_LoopTimeRange2(0, false, false, 0, 0, false)
  lines[#lines + 1] = string.format("sel_start=%.9f", sel_start)
  lines[#lines + 1] = string.format("sel_end=%.9f", sel_end)
  local cursor = reaper.GetCursorPositionEx(0)
  local num, den, tempo = reaper.TimeMap_GetTimeSigAtTime(0, sel_end > sel_start and sel_start or cursor)
  lines[#lines + 1] = string.format("tempo=%.6f", tempo)
  lines[#lines + 1] = string.format("meter=%d/%d", num, den)
  tempo_markers(lines)
  local _, key = reaper.GetProjExtState(0, EXT, "key")
  lines[#lines + 1] = "key=" .. one_line(key or "")
  local name = reaper.GetProjectName(0, "")
  lines[#lines + 1] = "project_name=" .. one_line((name or ""):gsub("%.[Rr][Pp][Pp]$", ""))
  lines[#lines + 1] = "project_path=" .. one_line(reaper.GetProjectPath("") or "")
  lines[#lines + 1] = "sample_rate=" .. project_sample_rate()
  lines[#lines + 1] = "play_state=" .. reaper.GetPlayState()
  local track = reaper.GetSelectedTrack(0, 0)
  if track then
    local _, track_name = reaper.GetTrackName(track)
    lines[#lines + 1] = "track=" .. math.floor(reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER") - 1)
    lines[#lines + 1] = "track_name=" .. one_line(track_name or "")
  else
    lines[#lines + 1] = "track=-1"
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ------------------------------------------------------------------ render
local NUM_KEYS = { "RENDER_SETTINGS", "RENDER_BOUNDSFLAG", "RENDER_STARTPOS", "RENDER_ENDPOS",
                   "RENDER_CHANNELS", "RENDER_TAILFLAG", "RENDER_SRATE" }
local STR_KEYS = { "RENDER_FILE", "RENDER_PATTERN", "RENDER_FORMAT" }
local WAV_24BIT = "ZXZhdxgAAA=="  -- sink config: 'evaw' fourcc, 24 bit

local function render(cmd)
  local start_s, end_s, path = tonumber(cmd.start), tonumber(cmd["end"]), cmd.path
  if not (start_s and end_s and path) or end_s <= start_s then
    return "error=render needs start < end and a path\n"
  end
  local count = reaper.GetProjectStateChangeCount(0)
  if cmd.unchanged_since and tonumber(cmd.unchanged_since) == count then
    return "ok=1\nunchanged=1\nchange_count=" .. count .. "\n"  -- the bridge has this render already
  end
  local dir, base = path:match("^(.*)[/\\]([^/\\]+)%.wav$")
  if not dir then return "error=render path must end in .wav: " .. one_line(path) .. "\n" end

  -- 1. remember the user's render settings
  local saved_num, saved_str = {}, {}
  for _, k in ipairs(NUM_KEYS) do saved_num[k] = reaper.GetSetProjectInfo(0, k, 0, false) end
  for _, k in ipairs(STR_KEYS) do
    local _, v = reaper.GetSetProjectInfo_String(0, k, "", false)
    saved_str[k] = v
  end
  -- optional: render one track only by soloing it through the master
  local solo_track, saved_solo = nil, {}
  if cmd.source == "track" then
    solo_track = reaper.GetSelectedTrack(0, 0)
    if solo_track then
      for i = 0, reaper.CountTracks(0) - 1 do
        local tr = reaper.GetTrack(0, i)
        saved_solo[i] = reaper.GetMediaTrackInfo_Value(tr, "I_SOLO")
        reaper.SetMediaTrackInfo_Value(tr, "I_SOLO", tr == solo_track and 1 or 0)
      end
    end
  end

  -- 2. master mix, custom bounds, stereo, no tail, 24-bit WAV into the requested file
  reaper.GetSetProjectInfo(0, "RENDER_SETTINGS", 0, true)
  reaper.GetSetProjectInfo(0, "RENDER_BOUNDSFLAG", 0, true)
  reaper.GetSetProjectInfo(0, "RENDER_STARTPOS", start_s, true)
  reaper.GetSetProjectInfo(0, "RENDER_ENDPOS", end_s, true)
  reaper.GetSetProjectInfo(0, "RENDER_CHANNELS", 2, true)
  -- the engine's rate when asked (REAPER resamples; the bridge then uploads the file as it is)
  reaper.GetSetProjectInfo(0, "RENDER_SRATE", tonumber(cmd.rate) or 0, true)
  reaper.GetSetProjectInfo(0, "RENDER_TAILFLAG", 0, true)
  reaper.GetSetProjectInfo_String(0, "RENDER_FILE", dir, true)
  reaper.GetSetProjectInfo_String(0, "RENDER_PATTERN", base, true)
  reaper.GetSetProjectInfo_String(0, "RENDER_FORMAT", WAV_24BIT, true)
  os.remove(path)

  -- 3. render with the most recent settings, closing the dialog when done (blocks until done)
  reaper.Main_OnCommand(42230, 0)

  -- 4. restore everything we touched
  for k, v in pairs(saved_num) do reaper.GetSetProjectInfo(0, k, v, true) end
  for k, v in pairs(saved_str) do reaper.GetSetProjectInfo_String(0, k, v, true) end
  for i, v in pairs(saved_solo) do
    local tr = reaper.GetTrack(0, i)
    if tr then reaper.SetMediaTrackInfo_Value(tr, "I_SOLO", v) end
  end

  local fh = io.open(path, "rb")
  if not fh then return "error=REAPER did not write " .. one_line(path) .. " (render cancelled?)\n" end
  local size = fh:seek("end")
  fh:close()
  if size < 1024 then return "error=the render of " .. one_line(path) .. " is empty\n" end
  -- counted after restoring the settings, so that our own changes do not mark the project changed
  return "ok=1\npath=" .. path .. "\nchange_count=" .. reaper.GetProjectStateChangeCount(0) .. "\n"
end

-- ------------------------------------------------------------------ insert
-- The new track an action's last stem went to (by GUID, in ExtState: the wake script runs in a
-- fresh Lua state each time), so that an action's stems keep their order.
local function group_track(group)
  if not group or group == "" then return nil end
  local saved_group, guid = reaper.GetExtState(EXT, "stem_track"):match("^(.-)|(.*)$")
  if saved_group ~= group then return nil end
  for i = 0, reaper.CountTracks(0) - 1 do
    local tr = reaper.GetTrack(0, i)
    if reaper.GetTrackGUID(tr) == guid then return tr end
  end
  return nil
end

local function remember_group_track(group, track)
  if group and group ~= "" then reaper.SetExtState(EXT, "stem_track", group .. "|" .. reaper.GetTrackGUID(track), false) end
end
local function clear_range(track, pos, len)
  -- Split items at both edges, then delete what lies inside [pos, pos+len).
  local finish = pos + len
  for i = reaper.CountTrackMediaItems(track) - 1, 0, -1 do
    local item = reaper.GetTrackMediaItem(track, i)
    local a = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    local b = a + reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
    if a < finish and b > pos then
      local middle = item
      if a < pos then middle = reaper.SplitMediaItem(item, pos) or item end
      if b > finish then reaper.SplitMediaItem(middle, finish) end
      reaper.DeleteTrackMediaItem(track, middle)
    end
  end
end

local function insert(cmd)
  local path, pos = cmd.path, tonumber(cmd.position)
  if not (path and pos) or pos < 0 then return "error=insert needs a path and a position >= 0\n" end
  local fh = io.open(path, "rb")
  if not fh then return "error=cannot open " .. one_line(path) .. "\n" end
  fh:close()

  reaper.Undo_BeginBlock2(0)
  reaper.PreventUIRefresh(1)
  local track
  local index = tonumber(cmd.track) or -1
  if cmd.new_track == "1" then
    local at = reaper.CountTracks(0)
    local selected = reaper.GetSelectedTrack(0, 0)
    local previous = group_track(cmd.group)  -- the track this action made last (stems)
    if index >= 0 then at = index + 1
    elseif previous then at = math.floor(reaper.GetMediaTrackInfo_Value(previous, "IP_TRACKNUMBER"))
    elseif selected then at = math.floor(reaper.GetMediaTrackInfo_Value(selected, "IP_TRACKNUMBER")) end
    reaper.InsertTrackAtIndex(at, true)
    track = reaper.GetTrack(0, at)
    remember_group_track(cmd.group, track)
    if cmd.track_name and cmd.track_name ~= "" then
      reaper.GetSetMediaTrackInfo_String(track, "P_NAME", cmd.track_name, true)
    end
  elseif index >= 0 then
    track = reaper.GetTrack(0, index)
  else
    track = reaper.GetSelectedTrack(0, 0) or reaper.GetTrack(0, 0)
  end
  if not track then
    reaper.PreventUIRefresh(-1)
    reaper.Undo_EndBlock2(0, "ACE Companion: insert clip (failed)", -1)
    return "error=no track to insert on\n"
  end

  local source = reaper.PCM_Source_CreateFromFile(path)
  local length = reaper.GetMediaSourceLength(source)
  if cmd.replace == "1" then clear_range(track, pos, tonumber(cmd.length) or length) end
  local item = reaper.AddMediaItemToTrack(track)
  local take = reaper.AddTakeToMediaItem(item)
  reaper.SetMediaItemTake_Source(take, source)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", path:match("([^/\\]+)$"), true)
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", pos)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", length)
  reaper.SetMediaItemInfo_Value(item, "C_BEATATTACHMODE", 0)  -- time base: the audio is already on tempo
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(0, "ACE Companion: insert clip", -1)
  return "ok=1\npath=" .. path .. "\n"
end

-- ------------------------------------------------------------------ read_midi (Sketch -> part)
-- Writes the notes of the selected MIDI item(s), or else of the MIDI items in the time selection,
-- to cmd.path in project quarter notes (bridge/sketch.py parses it):
--   track_name=<name of the first item's track>   start_qn=<span start>   end_qn=<span end>
--   program=<channel> <program>                   note=<start_qn> <end_qn> <pitch> <velocity> <channel>
local function midi_items()
  local items = {}
  for i = 0, reaper.CountSelectedMediaItems(0) - 1 do
    local item = reaper.GetSelectedMediaItem(0, i)
    local take = reaper.GetActiveTake(item)
    if take and reaper.TakeIsMIDI(take) then items[#items + 1] = item end
  end
  if #items > 0 then return items, nil end
  local sel_start, sel_end = reaper.GetSet_LoopTimeRange2(0, false, false, 0, 0, false)
  if sel_end <= sel_start then return items, nil end
  for t = 0, reaper.CountTracks(0) - 1 do
    local track = reaper.GetTrack(0, t)
    for i = 0, reaper.CountTrackMediaItems(track) - 1 do
      local item = reaper.GetTrackMediaItem(track, i)
      local take = reaper.GetActiveTake(item)
      local a = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
      local b = a + reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
      if take and reaper.TakeIsMIDI(take) and a < sel_end and b > sel_start then items[#items + 1] = item end
    end
  end
  return items, { sel_start, sel_end }
end

local function read_midi(cmd)
  if not cmd.path or cmd.path == "" then return "error=read_midi needs a path\n" end
  local items, selection = midi_items()
  if #items == 0 then
    return "error=no MIDI item selected: select a MIDI item (or make a time selection over one)\n"
  end
  local lines, span_a, span_b = {}, nil, nil
  local _, track_name = reaper.GetTrackName(reaper.GetMediaItem_Track(items[1]))
  for _, item in ipairs(items) do
    local take = reaper.GetActiveTake(item)
    local a = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    local b = a + reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
    if selection then a, b = math.max(a, selection[1]), math.min(b, selection[2]) end
    local qa, qb = reaper.TimeMap2_timeToQN(0, a), reaper.TimeMap2_timeToQN(0, b)
    span_a = span_a and math.min(span_a, qa) or qa
    span_b = span_b and math.max(span_b, qb) or qb
    local _, notes, ccs = reaper.MIDI_CountEvts(take)
    for i = 0, ccs - 1 do
      local _, _, muted, _, chanmsg, chan, msg2 = reaper.MIDI_GetCC(take, i)
      if chanmsg == 0xC0 and not muted then lines[#lines + 1] = string.format("program=%d %d", chan, msg2) end
    end
    for i = 0, notes - 1 do
      local _, _, muted, p0, p1, chan, pitch, vel = reaper.MIDI_GetNote(take, i)
      local n0, n1 = reaper.MIDI_GetProjQNFromPPQPos(take, p0), reaper.MIDI_GetProjQNFromPPQPos(take, p1)
      n0, n1 = math.max(n0, qa), math.min(n1, qb)  -- the item's edges cut its notes, as REAPER plays them
      if not muted and n1 > n0 then
        lines[#lines + 1] = string.format("note=%.9f %.9f %d %d %d", n0, n1, pitch, vel, chan)
      end
    end
  end
  table.insert(lines, 1, string.format("end_qn=%.9f", span_b))
  table.insert(lines, 1, string.format("start_qn=%.9f", span_a))
  table.insert(lines, 1, "track_name=" .. one_line(track_name or ""))
  if not write_atomic(cmd.path, table.concat(lines, "\n") .. "\n") then
    return "error=cannot write " .. one_line(cmd.path) .. "\n"
  end
  return "ok=1\npath=" .. cmd.path .. "\n"
end

-- ------------------------------------------------------------------ insert_named (Jam)
-- Like insert, on the track named cmd.track_name; that track is made at the end when missing.
local function insert_named(cmd)
  local name = cmd.track_name or ""
  if name == "" then return "error=insert_named needs a track_name\n" end
  for i = 0, reaper.CountTracks(0) - 1 do
    local _, track_name = reaper.GetTrackName(reaper.GetTrack(0, i))
    if track_name == name then
      cmd.track, cmd.new_track = tostring(i), "0"
      return insert(cmd)
    end
  end
  cmd.track, cmd.new_track = tostring(reaper.CountTracks(0) - 1), "1"
  return insert(cmd)
end

-- ------------------------------------------------------------------ main loop
local handlers = { render = render, insert = insert }
handlers.read_midi = read_midi  -- Sketch -> part (bridge/sketch.py)
handlers.insert_named = insert_named  -- Jam (bridge/jam.py)
local last_state, last_write, last_poll = "", 0, 0

local function handle_commands()
  reaper.EnumerateFiles(mailbox, -1)  -- drop REAPER's cached directory listing
  local i, names = 0, {}
  while true do
    local name = reaper.EnumerateFiles(mailbox, i)
    if not name then break end
    if name:match("^cmd%-[%w]+%.txt$") then names[#names + 1] = name end
    i = i + 1
  end
  for _, name in ipairs(names) do
    local path = mailbox .. "/" .. name
    local cmd = read_kv(path)
    os.remove(path)
    if cmd and cmd.id then
      local handler = handlers[cmd.command or ""]
      local ok, result = pcall(function()
        if not handler then return "error=unknown command " .. one_line(cmd.command or "") .. "\n" end
        return handler(cmd)
      end)
      reply(cmd.id, ok and result or ("error=" .. one_line(result) .. "\n"))
    end
  end
end

local function loop()
  local now = reaper.time_precise()
  if now - last_poll >= POLL_S then
    last_poll = now
    local text = state_text()
    if text ~= last_state or now - last_write >= HEARTBEAT_S then
      write_atomic(mailbox .. "/state.txt", text)
      last_state, last_write = text, now
    end
    handle_commands()
  end
  reaper.defer(loop)
end

if ACE_COMPANION_ONCE then
  handle_commands()  -- run by ace_companion_wake.lua: answer the waiting commands now, then end
else
  reaper.atexit(function() os.remove(mailbox .. "/state.txt") end)
  loop()
end
