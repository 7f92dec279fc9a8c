# Sourced by the entry points: installs what they need on a fresh machine.
# Every step checks first, so a second run costs nothing.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -q >/dev/null
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
  fi
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
}

# Debian's rustc-web (installed as /usr/bin/rustc) with the arm64 standard
# library and GCC's aarch64 linker: enough to cross-build the workspace.
ensure_aarch64_cross() {
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "dpkg --add-architecture arm64"
    $sudo dpkg --add-architecture arm64
    apt_updated=0
  fi
  apt_install rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
}

# The Python side: a virtualenv in .venv with the test and example
# dependencies, and the `ringway` package built from worker/ (maturin
# develop: the Python sources are used in place, the native module is
# rebuilt when the Rust code changed).
PYTHON_DEPS=(
  "maturin>=1.7,<2"
  "pytest>=8"
  "django>=5.2,<6"
  "whitenoise>=6.7"
  "uvloop>=0.19"
  "ruff>=0.6"
  "mypy>=1.10"
)
VENV="$ROOT/.venv"

ensure_venv() {
  local py=${RINGWAY_PYTHON:-python3}
  if ! command -v "$py" >/dev/null; then
    echo "$py not found: install CPython 3.10 or newer" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "python -m venv .venv"
    "$py" -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" - "${PYTHON_DEPS[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version, PackageNotFoundError
import re
for spec in sys.argv[1:]:
    name = re.split(r"[<>=!~ ]", spec, 1)[0]
    try:
        version(name)
    except PackageNotFoundError:
        sys.exit(1)
PY
    log "pip install ${PYTHON_DEPS[*]}"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "${PYTHON_DEPS[@]}"
  fi
  log "maturin develop --release (the ringway package, into .venv)"
  (cd "$ROOT/worker" && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --release -q >/dev/null)
}
