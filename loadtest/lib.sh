# Shell functions the load scripts share (`source loadtest/lib.sh`).

# start_entroll BIN LOG FLAGS...: starts `BIN serve --port ${PORT:-0} FLAGS` in the background,
# its log in LOG and its standard output in LOG.stdout, and waits until it listens (up to 3
# minutes: a large checkpoint loads slowly). Sets ENTROLL_URL and ENTROLL_PID; if the server
# never listens, prints its log's tail and returns 1.
start_entroll() {
  local bin=$1 log=$2
  shift 2
  "$bin" serve --port "${PORT:-0}" "$@" < /dev/null > "$log.stdout" 2> "$log" &
  ENTROLL_PID=$!
  ENTROLL_URL=
  for _ in $(seq 900); do
    ENTROLL_URL=$(sed -n 's/^entroll listening on //p' "$log.stdout" 2>/dev/null || true)
    [ -n "$ENTROLL_URL" ] && return 0
    kill -0 "$ENTROLL_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$log" >&2
  kill "$ENTROLL_PID" 2>/dev/null || true
  return 1
}

# cuda_library_path: exports LD_LIBRARY_PATH with the CUDA libraries of this machine's Python
# environment (the nvidia-* wheels PyTorch brings: nvidia/*/lib, nvidia/cu13/lib) and
# /usr/local/cuda/lib64. A CUDA build of entroll has no RPATH and opens cuBLAS, cuRAND, NVRTC
# and the runtime by name, so without them the loader finds nothing where PyTorch keeps them.
cuda_library_path() {
  local dirs
  dirs=$("${PYTHON:-python3}" - 2>/dev/null <<'PY' || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
found = set()
for base in nvidia.__path__:
    for pattern in ("*/lib/lib*.so*", "*/*/lib/lib*.so*"):
        found.update(os.path.dirname(p) for p in glob.glob(os.path.join(base, pattern)))
print(":".join(sorted(found)))
PY
)
  export LD_LIBRARY_PATH=${dirs:+$dirs:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

# stop_entroll PID: stops the server and waits for it.
stop_entroll() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# keys_on: exports ENTROLL_API_KEY and ENTROLL_ADMIN_KEY, new random ones where unset, so the
# servers started next require them and the clients (load generator, learner) send them.
keys_on() {
  ENTROLL_API_KEY=${ENTROLL_API_KEY:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
  ENTROLL_ADMIN_KEY=${ENTROLL_ADMIN_KEY:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
  export ENTROLL_API_KEY ENTROLL_ADMIN_KEY
}

# keyed_status URL [KEY]: the HTTP status of GET URL with KEY as its bearer token (none: no
# header).
keyed_status() {
  local auth=()
  [ -z "${2:-}" ] || auth=(-H "Authorization: Bearer $2")
  curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$1"
}

# free_ports N: N TCP ports nothing listens on now, one per line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in sockets))
PY
}

# learner_setup: prepares the learner (scripts/learner-env) and the entroll binary of $PROFILE
# (built unless BUILT is set: scripts/test builds it once, with the tests). Sets PYTHON (the
# learner's interpreter), MODEL (the default model as safetensors, which the learner trains)
# and ENTROLL_BIN (the binary's absolute path).
learner_setup() {
  PYTHON=$(scripts/learner-env)
  MODEL=$("$PYTHON" -c 'import os; print(os.path.join(os.environ.get("ENTROLL_HOME") or os.path.expanduser("~/.cache/entroll"), "models", "SmolLM2-135M-Instruct-hf"))')
  [ -n "${BUILT:-}" ] || cargo build --quiet --profile "${PROFILE:-release}" --bin entroll
  local dir=${CARGO_TARGET_DIR:-target}/${PROFILE:-release}
  [ "${PROFILE:-release}" = dev ] && dir=${CARGO_TARGET_DIR:-target}/debug
  ENTROLL_BIN=$(realpath "$dir/entroll")
}
