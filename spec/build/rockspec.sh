#!/bin/sh
# `luarocks make rockspecs/kvbm-scm-1.rockspec` builds the module: into a
# temporary tree, from a copy of the sources (the source tree may be read-
# only, as under make distcheck); then a stock lua5.4 loads it from there.
src=${KVBM_SRCDIR:-.}
luarocks=${KVBM_LUAROCKS:-no}
lua=${KVBM_LUA:-no}
if [ "$luarocks" = no ] || [ -z "$luarocks" ]; then
  echo "1..0 # SKIP luarocks not found (apt: luarocks)"
  exit 0
fi
if [ "$lua" = no ] || [ -z "$lua" ]; then
  echo "1..0 # SKIP lua5.4 not found (apt: lua5.4)"
  exit 0
fi
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
fail() {
  n=$((n + 1))
  echo "not ok $n - $1"
  [ -f "$log" ] && tail -n 30 "$log" | sed 's/^/# /'
  echo "1..$n"
  exit 1
}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvbm-rock.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
log=$work/log
mkdir -p "$work/src/src/lua" "$work/home"
cp "$src/configure.ac" "$work/src/" &&
  cp "$src"/src/*.c "$src"/src/*.h "$src/src/kvbm_version.h.in" "$work/src/src/" &&
  cp "$src"/src/lua/*.c "$src"/src/lua/*.h "$work/src/src/lua/" &&
  rm -f "$work/src/src/kvbm_version.h" &&
  cp -R "$src/lua" "$src/rockspecs" "$work/src/" || fail "copy the sources"
chmod -R u+w "$work/src" # a read-only source tree (make distcheck) gives read-only copies

# HOME: luarocks' own config and cache stay in the work directory
(cd "$work/src" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL HOME="$work/home" \
  "$luarocks" --lua-version=5.4 --tree="$work/tree" make rockspecs/kvbm-scm-1.rockspec) >"$log" 2>&1 ||
  fail "luarocks make rockspecs/kvbm-scm-1.rockspec"
ok "luarocks make rockspecs/kvbm-scm-1.rockspec (into a temporary tree)"

so=$(find "$work/tree" -name kvbm.so | head -n 1)
[ -n "$so" ] || fail "the rock installs kvbm.so"
ok "the rock installs ${so#"$work/tree/"}"

code='local k = require "kvbm"
print(k._VERSION, k.hash.tostring(k.sequence({0,1,2,3,4,5,6,7}, 4, 1337):hash(1)), type(k.tiers))'
out=$(env -u LD_PRELOAD LUA_CPATH="$(dirname "$so")/?.so" \
  LUA_PATH="$work/tree/share/lua/5.4/?.lua;$work/tree/share/lua/5.4/?/init.lua" \
  "$lua" -e "$code" 2>&1)
echo "# $out"
case $out in
  "kvbm "*"	1:P5PmJLYPXS4:12KUtXWCDJu	table") ok "lua5.4 loads the rock's kvbm (and its pure-Lua kvbm.tiers)" ;;
  *) fail "lua5.4 loads the rock's kvbm (and its pure-Lua kvbm.tiers)" ;;
esac
echo "1..$n"
