#!/usr/bin/env bash
# Must .venv be rebuilt from scratch?  tools/venv_state.sh VENV WANT
# WANT is what the stamp VENV/.installed records after a good install: "python X.Y.Z torch BUILD".
# Prints why .venv must go (its python no longer runs or has no pip, it was made by another Python,
# or with another torch build); prints nothing when it fits or does not exist yet.
set -uo pipefail
venv=$1 want=$2
[ -e "$venv" ] || exit 0
if ! have=$("$venv/bin/python" -c 'import pip, sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)
then
    echo "its python does not run or has no pip"
    exit 0
fi
recorded=$(cat "$venv/.installed" 2>/dev/null)
# An empty stamp comes from before the build was recorded: the registry's torch then.
recorded=${recorded:-python $have torch pypi}
if [ "python $have" != "${want% torch *}" ]; then
    echo "it was made by Python $have, not by ${want% torch *}"
elif [ "$recorded" != "$want" ]; then
    echo "it holds ${recorded#* * }, not ${want#* * }"
fi
