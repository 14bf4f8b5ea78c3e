#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or fail with one line.
# Order: python3.13 / python3.12 on PATH if they actually run (pyenv shims may not),
# then the newest >= 3.12 under $(pyenv root)/versions.
set -u
is_recent() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for candidate in python3.13 python3.12; do
    if command -v "$candidate" >/dev/null 2>&1 && is_recent "$candidate"; then
        command -v "$candidate"
        exit 0
    fi
done
root=""
if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null); fi
[ -n "$root" ] || root="${PYENV_ROOT:-$HOME/.pyenv}"
if [ -d "$root/versions" ]; then
    for dir in $(ls -1 "$root/versions" | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -V -r); do
        candidate="$root/versions/$dir/bin/python3"
        if [ -x "$candidate" ] && is_recent "$candidate"; then
            echo "$candidate"
            exit 0
        fi
    done
fi
echo "error: Python 3.12+ is needed (none found on PATH or under pyenv); install it and rerun." >&2
exit 1
