-- A stand-in for REAPER's Lua API, enough to run ace_companion.lua outside REAPER.
-- `mock` holds the fake project; tests inspect and change it from Python.
mock = {
  now = 0, ext = {}, proj_ext = { ace_companion = { key = "A minor" } },
  sel = { 3.75, 18.75 }, cursor = 0, play_state = 0, project_name = "Demo.RPP", project_path = "/music/demo",
  srate = 44100, markers = { { 0, 96, 3, 4 } }, project_tempo = { 96, 3, 4 },  -- before the first marker
  info = { RENDER_SETTINGS = 32, RENDER_BOUNDSFLAG = 1, RENDER_STARTPOS = 0, RENDER_ENDPOS = 0,
           RENDER_CHANNELS = 1, RENDER_TAILFLAG = 3, RENDER_SRATE = 0, PROJECT_SRATE_USE = 1, PROJECT_SRATE = 44100 },
  info_str = { RENDER_FILE = "/user/renders", RENDER_PATTERN = "$project", RENDER_FORMAT = "bDNwbQ==" },
  tracks = {}, selected = nil, undo = {}, actions = {}, deferred = nil, render_size = 4096,
  change_count = 7, script_path = "",
}

local guids = 0
local function new_track(name)
  guids = guids + 1
  return { name = name, items = {}, solo = 0, guid = "{TRACK-" .. guids .. "}" }
end
mock.tracks = { new_track("Drums"), new_track("Keys") }
mock.selected = mock.tracks[2]

local function track_index(track)
  for i, t in ipairs(mock.tracks) do if t == track then return i end end
  return nil
end

reaper = {}
function reaper.GetExtState(section, key) return (mock.ext[section] or {})[key] or "" end
function reaper.SetExtState(section, key, value, _)
  mock.ext[section] = mock.ext[section] or {}
  mock.ext[section][key] = value
end
function reaper.GetProjectStateChangeCount(_) return mock.change_count end
function reaper.get_action_context() return false, mock.script_path, 0, 0, 0, 0, 0, "" end
function reaper.GetTrackGUID(track) return track.guid end
-- py_makedirs / py_listdir are provided by the Python test (lupa has no popen)
function reaper.RecursiveCreateDirectory(path, _) py_makedirs(path); return 1 end
function reaper.GetResourcePath() return "/tmp" end
function reaper.GetSet_LoopTimeRange2(_, is_set, is_loop, s, e, _)
  return mock.sel[1], mock.sel[2]
end
function reaper.GetCursorPositionEx(_) return mock.cursor end
function reaper.TimeMap_GetTimeSigAtTime(_, t)
  local m = { 0, mock.project_tempo[1], mock.project_tempo[2], mock.project_tempo[3] }
  for _, marker in ipairs(mock.markers) do if marker[1] <= t then m = marker end end
  return m[3], m[4], m[2]
end
function reaper.CountTempoTimeSigMarkers(_) return #mock.markers end
function reaper.GetTempoTimeSigMarker(_, i)
  local m = mock.markers[i + 1]
  return true, m[1], 0, 0, m[2], m[3], m[4], false
end
function reaper.GetProjExtState(_, section, key) local v = (mock.proj_ext[section] or {})[key]; return v and 1 or 0, v or "" end
function reaper.GetProjectName(_, _) return mock.project_name end
function reaper.GetProjectPath(_) return mock.project_path end
function reaper.GetSetProjectInfo(_, key, value, is_set)
  if is_set then mock.info[key] = value end
  return mock.info[key] or 0
end
function reaper.GetSetProjectInfo_String(_, key, value, is_set)
  if is_set then mock.info_str[key] = value end
  return true, mock.info_str[key] or ""
end
function reaper.GetAudioDeviceInfo(_) return true, tostring(mock.srate) end
function reaper.GetPlayState() return mock.play_state end
function reaper.GetSelectedTrack(_, _) return mock.selected end
function reaper.GetTrackName(track) return true, track.name end
function reaper.GetMediaTrackInfo_Value(track, key)
  if key == "IP_TRACKNUMBER" then return track_index(track) end
  if key == "I_SOLO" then return track.solo end
  return 0
end
function reaper.SetMediaTrackInfo_Value(track, key, value) if key == "I_SOLO" then track.solo = value end end
function reaper.GetSetMediaTrackInfo_String(track, key, value, is_set) if is_set then track.name = value end return true, track.name end
function reaper.CountTracks(_) return #mock.tracks end
function reaper.GetTrack(_, i) return mock.tracks[i + 1] end
function reaper.InsertTrackAtIndex(i, _) table.insert(mock.tracks, i + 1, new_track("")) end
function reaper.EnumerateFiles(path, i)
  if i < 0 then
    mock.listing = py_listdir(path)
    return nil
  end
  return mock.listing[i + 1]
end
function reaper.time_precise() return mock.now end
function reaper.defer(fn) mock.deferred = fn end
function reaper.atexit(fn) mock.atexit = fn end
function reaper.Main_OnCommand(id, _)
  mock.actions[#mock.actions + 1] = id
  mock.seen_render = { settings = mock.info.RENDER_SETTINGS, bounds = mock.info.RENDER_BOUNDSFLAG,
    start = mock.info.RENDER_STARTPOS, finish = mock.info.RENDER_ENDPOS, channels = mock.info.RENDER_CHANNELS,
    srate = mock.info.RENDER_SRATE,
    format = mock.info_str.RENDER_FORMAT, file = mock.info_str.RENDER_FILE, pattern = mock.info_str.RENDER_PATTERN,
    solo_drums = mock.tracks[1].solo, solo_keys = mock.tracks[2].solo }
  if id == 42230 and mock.render_size > 0 then
    local fh = io.open(mock.info_str.RENDER_FILE .. "/" .. mock.info_str.RENDER_PATTERN .. ".wav", "wb")
    fh:write(string.rep("x", mock.render_size))
    fh:close()
  end
end
function reaper.Undo_BeginBlock2(_) mock.undo[#mock.undo + 1] = "begin" end
function reaper.Undo_EndBlock2(_, name, _) mock.undo[#mock.undo + 1] = name end
function reaper.PreventUIRefresh(_) end
function reaper.UpdateArrange() end
function reaper.PCM_Source_CreateFromFile(path) return { path = path, length = 15.0 } end
function reaper.GetMediaSourceLength(source) return source.length, false end
function reaper.CountTrackMediaItems(track) return #track.items end
function reaper.GetTrackMediaItem(track, i) return track.items[i + 1] end
function reaper.AddMediaItemToTrack(track)
  local item = { track = track, D_POSITION = 0, D_LENGTH = 0, takes = {} }
  track.items[#track.items + 1] = item
  return item
end
function reaper.GetMediaItemInfo_Value(item, key) return item[key] or 0 end
function reaper.SetMediaItemInfo_Value(item, key, value) item[key] = value end
function reaper.SplitMediaItem(item, pos)
  local right = reaper.AddMediaItemToTrack(item.track)
  right.D_POSITION, right.D_LENGTH, right.name = pos, item.D_POSITION + item.D_LENGTH - pos, item.name
  item.D_LENGTH = pos - item.D_POSITION
  return right
end
function reaper.DeleteTrackMediaItem(track, item)
  for i, it in ipairs(track.items) do if it == item then table.remove(track.items, i) return true end end
  return false
end
function reaper.AddTakeToMediaItem(item) local take = { item = item }; item.takes[#item.takes + 1] = take; return take end
function reaper.SetMediaItemTake_Source(take, source) take.source = source end
function reaper.GetSetMediaItemTakeInfo_String(take, key, value, is_set) if is_set then take.name = value end return true, take.name end
