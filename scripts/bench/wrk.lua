-- The requests of python -m scripts.bench, and the figures it reads back.
--
-- wrk -s scripts/bench/wrk.lua URL -- MODE [ARGS...]
--
--   get                     GET the URL's path (no Lua per request: wrk's static request)
--   order RUN NAME...       POST /orders {"name": NAME, "quantity": 1}, names in rotation, and an
--                           Idempotency-Key RUN-<thread>-<n> unique to each request
--   order-query COUNT       GET /orders/<n> over the numbers 0 .. COUNT-1 (orders that exist)
--   mixed RUN COUNT NAME... in turn: GET /products/NAME, an order as above, an order query
--
-- done() prints one line that starts with "wrk-result " and goes on with JSON:
-- requests, duration and bytes, latency percentiles in microseconds, wrk's error counts.

local threads = {}
local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("id", next_id)
   table.insert(threads, thread)
end

local mode, run, count
local names = {}
local n = 0

local function order()
   local name = names[n % #names + 1]
   local key = string.format("%s-%d-%d", run, id, n)
   local body = string.format('{"name": "%s", "quantity": 1}', name)
   return wrk.format("POST", "/orders", {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}, body)
end

local function order_query()
   -- A stride prime to most counts spreads the reads over the log; each thread starts elsewhere.
   return wrk.format("GET", string.format("/orders/%d", (n * 7919 + id * 104729) % count))
end

local function product()
   return wrk.format("GET", "/products/" .. names[n % #names + 1])
end

function init(args)
   mode = args[1] or "get"
   if mode == "get" then
      request = nil -- wrk sends its one static request, built once
      return
   end
   if mode == "order" then
      run = args[2]
      for i = 3, #args do table.insert(names, args[i]) end
   elseif mode == "order-query" then
      count = tonumber(args[2])
   elseif mode == "mixed" then
      run, count = args[2], tonumber(args[3])
      for i = 4, #args do table.insert(names, args[i]) end
   else
      error("unknown mode " .. mode)
   end
end

function request()
   n = n + 1
   if mode == "order" then
      return order()
   elseif mode == "order-query" then
      return order_query()
   end
   local turn = n % 3
   if turn == 0 then
      return product()
   elseif turn == 1 then
      return order()
   end
   return order_query()
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'wrk-result {"requests": %d, "duration_us": %d, "bytes": %d, "threads": %d, '
         .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, summary.bytes, #threads,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
