-- Open-loop, constant-rate load for plain wrk, in the manner of wrk2: each thread drives one connection
-- on a fixed schedule (one request every `interval`), and latency is taken from when a request was
-- *scheduled*, not from when it could be sent, so a slow response that holds up the requests behind it
-- is counted against all of them (no coordinated omission).
--
--   wrk -t T -c T -d 10s -s arm.lua URL -- <requests/s per thread> <warm-up seconds> <T>
--
-- The threads' schedules are staggered evenly over one interval (thread i starts i/T of it late), so the
-- service sees requests spread at the total rate. (They once started at a `math.random()` offset, but
-- every thread has its own Lua state with the same unseeded generator: all T threads drew the same
-- offset and fired together, T-request bursts that made latency grow with T at any rate.)
--
-- wrk's timers have millisecond resolution: a request goes out up to 1 ms *before* its slot and is then
-- timed from when it was really sent; one that goes out after its slot (the connection was still busy)
-- is timed from its slot. Prints one line `BENCH_RESULT {json}` with the percentiles of all threads.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("bench_timespec")

local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
   return tonumber(now_ts.tv_sec) * 1000000 + tonumber(now_ts.tv_nsec) / 1000
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("index", #threads - 1)
end

function init(args)
   interval_us = 1000000 / tonumber(args[1])
   stagger = index / tonumber(args[3] or 1)
   record_from = now_us() + tonumber(args[2]) * 1000000
   next_slot = nil
   slot = 0
   sent = 0
   latencies = {}
   recorded = 0
   non2xx = 0
   late = 0
end

function delay()
   local now = now_us()
   if next_slot == nil then
      next_slot = now + stagger * interval_us
   end
   slot = next_slot
   next_slot = next_slot + interval_us
   local wait_ms = math.floor((slot - now) / 1000)
   if wait_ms < 0 then
      return 0
   end
   return wait_ms
end

function request()
   sent = now_us()
   return wrk.format()
end

function response(status, headers, body)
   local now = now_us()
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
   if slot >= record_from then
      local start = sent
      if sent > slot then
         start = slot  -- sent late: the wait for the connection is part of the latency
         if sent - slot > 1000 then
            late = late + 1
         end
      end
      recorded = recorded + 1
      latencies[recorded] = now - start
   end
end

function done(summary, latency, requests)
   local all, n, bad, behind = {}, 0, 0, 0
   for _, thread in ipairs(threads) do
      for _, value in ipairs(thread:get("latencies")) do
         n = n + 1
         all[n] = value
      end
      bad = bad + thread:get("non2xx")
      behind = behind + thread:get("late")
   end
   table.sort(all)
   local function pct(p)
      if n == 0 then return -1 end
      local rank = math.max(1, math.ceil(n * p / 100))
      return all[rank]
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "timeout": %d, "recorded": %d, "late": %d, "p50_us": %.1f, "p90_us": %.1f, ' ..
      '"p99_us": %.1f, "p999_us": %.1f, "max_us": %.1f}\n',
      summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout, n, behind,
      pct(50), pct(90), pct(99), pct(99.9), pct(100)))
end
