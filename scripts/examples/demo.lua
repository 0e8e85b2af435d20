-- demo.lua: hash a prompt into KV-cache blocks and print each block's
-- positional lineage hash, the identity kvbm (and Dynamo) give a block.
--   ./kvbm scripts/examples/demo.lua [block_size] [salt]
local kvbm = require "kvbm"

local block_size = tonumber(arg and arg[1]) or 4
local salt = tonumber(arg and arg[2]) or 1337

-- a stand-in for a tokenized prompt: token ids 0..17
local tokens = {}
for i = 0, 17 do tokens[#tokens + 1] = i end

local seq = kvbm.sequence(tokens, block_size, salt)
print(("%d tokens, block size %d, salt %d -> %d full blocks, %d tokens in the partial block")
  :format(seq:total_tokens(), block_size, salt, #seq, #seq:partial()))
for pos = 0, #seq - 1 do
  local h = seq:hash(pos)
  print(("block %d  %s  %s"):format(pos, kvbm.hash.hex(h), kvbm.hash.tostring(h)))
end

-- the sequence grows token by token; a block is hashed the moment it fills
for t = 18, 21 do
  local completed = seq:append(t)
  if completed then
    print(("token %d completed block %d: %s"):format(t, completed, kvbm.hash.tostring(seq:hash(completed))))
  end
end
