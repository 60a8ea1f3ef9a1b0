-- ace_companion_wake.lua: answer the bridge's waiting mailbox commands now.
--
-- Register it as an action (Actions > Load ReaScript) and give its command id to the bridge
-- (`--reaper-wake-action _RS...`, from the action list's "Copy selected action command ID").
-- The bridge runs it over REAPER's OSC (/action/_RS...) each time it drops a command, so a
-- render or insert starts at once instead of at ace_companion.lua's next 0.1 s look.
-- ace_companion.lua must sit in the same folder.
local script = ({ reaper.get_action_context() })[2]
local folder = script:match("^(.*[/\\])") or ""
ACE_COMPANION_ONCE = true
dofile(folder .. "ace_companion.lua")
