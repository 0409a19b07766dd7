#!/usr/bin/env bash
# What `make` needs before it builds anything: one line for each missing tool, saying how to get it.
#   tools/prereqs.sh book|lab|test [PYTHON]
# book and lab need Python >= 3.11 with venv; a C++ compiler and npm are recommended (a note when
# missing). test needs all of them and Chromium too: as root with apt-get it installs Debian's chromium
# package; otherwise it says how to install it and stops.
set -uo pipefail
goal=${1:-book}
python=${2:-python3}
missing=0
os=$(uname -s)

need() {  # need WHAT LINUX_COMMAND MACOS_COMMAND [required|note]
    local what=$1 linux=$2 macos=$3 level=${4:-required} how
    how=$([ "$os" = Darwin ] && echo "$macos" || echo "$linux; macOS: $macos")
    if [ "$level" = required ]; then
        echo "missing: $what. Install it: $how" >&2
        missing=1
    else
        echo "note: $what. Install it: $how" >&2
    fi
}

command -v make >/dev/null || need "make" "sudo apt-get install make (Debian/Ubuntu)" "xcode-select --install"

# Python >= 3.11, with the venv module and pip's bootstrap (Debian ships both separately).
if ! command -v "$python" >/dev/null; then
    need "$python (Python >= 3.11; choose another with make PYTHON=python3.12)" \
        "sudo apt-get install python3 python3-venv (Debian/Ubuntu)" "brew install python@3.12"
elif ! version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null); then
    need "a working $python (it does not run)" "sudo apt-get install python3 python3-venv (Debian/Ubuntu)" \
        "brew install python@3.12"
elif ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    need "Python >= 3.11 ($python is $version; choose another with make PYTHON=python3.12)" \
        "sudo apt-get install python3.11 python3.11-venv (Debian/Ubuntu)" "brew install python@3.12"
elif ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    minor=${version%.*}
    need "Python's venv module for $python" "sudo apt-get install python$minor-venv (Debian/Ubuntu)" \
        "brew reinstall python@$minor"
fi

# Inductor (torch.compile on a CPU: FusedCartPole, chapter 8, --compile) compiles C++ with $CXX,
# else g++ (clang++ on macOS).
cxx=${CXX:-$([ "$os" = Darwin ] && echo clang++ || echo g++)}
if ! command -v "$cxx" >/dev/null; then
    level=$([ "$goal" = test ] && echo required || echo note)
    need "a C++ compiler ($cxx: torch.compile needs it for FusedCartPole and chapter 8)" \
        "sudo apt-get install g++ (Debian/Ubuntu)" "xcode-select --install" "$level"
fi

# npm fetches the MathJax copy that lets the book render offline (the browser test needs it).
if ! command -v npm >/dev/null; then
    if [ "$goal" = test ]; then
        need "npm (the offline MathJax copy the browser test checks)" "sudo apt-get install npm (Debian/Ubuntu)" \
            "brew install node"
    elif [ "$goal" = book ]; then
        need "npm (without it the book loads MathJax from its CDN)" "sudo apt-get install npm (Debian/Ubuntu)" \
            "brew install node" note
    fi
fi

# Chromium renders every page for the browser test.
if [ "$goal" = test ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium package (the browser test needs it)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || need "chromium (apt-get install chromium failed)" "sudo apt-get install chromium (Debian), sudo snap install chromium (Ubuntu)" \
                "brew install --cask chromium"
    else
        need "Chromium (the browser test renders every page with it)" "sudo apt-get install chromium (Debian), sudo snap install chromium (Ubuntu)" \
            "brew install --cask chromium"
    fi
fi

exit $missing
