-- A small CPU-bound Lua workload for the differential tests and the
-- benchmarks: recursion, tables, strings, sorting and closures. No
-- coroutines or errors: they longjmp (`_longjmp`) in a C build of Lua,
-- and uftrace 0.13 then crashes the program (ftail traces them: the
-- traced corpus runs of Lua's own test suite use both).
local N = tonumber(arg and arg[1]) or 1

local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end

local acc = 0
for round = 1, N do
  acc = acc + fib(18)

  local t = {}
  for i = 1, 2000 do t[i] = (i * 7919) % 2003 end
  table.sort(t, function(a, b) return a > b end)
  acc = acc + t[1]

  local words = {}
  for w in string.gmatch(string.rep("lorem ipsum dolor sit amet ", 200), "%a+") do
    words[#words + 1] = w:upper()
  end
  acc = acc + #table.concat(words, ","):gsub("O", "0")

  local add = function(a) return function(b) return a + b end end
  for i = 1, 500 do acc = add(i)(acc) % 1000003 end
  acc = acc + #string.format("%d %s %5.2f", round, "r", round / 3)
end
print(acc)
