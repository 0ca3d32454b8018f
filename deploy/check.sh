#!/usr/bin/env bash
# Checks the deployment files without deploying anything:
#   1. every YAML and JSON file under deploy/ parses (python3 with PyYAML);
#   2. rempart.service passes `systemd-analyze verify` with no message at all,
#      where that tool exists (it exits 0 even on ignored lines, so its output
#      is what counts);
#   3. the container, compose and Kubernetes policies pass `rempart check`,
#      when a built rempart exists (origin names that only resolve inside
#      compose or the cluster are replaced by 127.0.0.1:80 in a temporary copy).
#
#   deploy/check.sh                 # from the repository root or anywhere
#   REMPART_BIN=path/to/rempart deploy/check.sh
set -euo pipefail
deploy="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$deploy")"
bin="${REMPART_BIN:-$root/target/release/rempart}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { printf 'ok    %s\n' "$*"; }
bad() { printf 'FAIL  %s\n' "$*"; failed=1; }

# 1. YAML and JSON parse.
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "PyYAML is missing: pip install pyyaml" >&2
  exit 1
fi
while IFS= read -r -d '' f; do
  case "$f" in
    *.json) cmd='import json,sys; json.load(open(sys.argv[1]))' ;;
    *) cmd='import yaml,sys; list(yaml.safe_load_all(open(sys.argv[1])))' ;;
  esac
  if python3 -c "$cmd" "$f" 2>"$tmp/err"; then ok "parses: ${f#"$root"/}"; else bad "parses: ${f#"$root"/}: $(tail -n 1 "$tmp/err")"; fi
done < <(find "$deploy" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) -print0 | sort -z)

# 2. The systemd unit. verify wants ExecStart's binary to exist: point a copy
# of the unit at the built binary (or any executable when there is none).
if command -v systemd-analyze >/dev/null; then
  exe="$bin"; [ -x "$exe" ] || exe="$(command -v true)"
  sed "s#/usr/local/bin/rempart#$exe#g" "$deploy/rempart.service" > "$tmp/rempart.service"
  if out="$(systemd-analyze verify "$tmp/rempart.service" 2>&1)" && [ -z "$out" ]; then
    ok "systemd-analyze verify rempart.service"
  else
    bad "systemd-analyze verify rempart.service: $out"
  fi
else
  echo "skip  systemd-analyze not installed"
fi

# 3. The policies.
if [ -x "$bin" ]; then
  cp "$deploy/container-policy.yaml" "$tmp/container.yaml"
  sed 's/"wordpress:80"/"127.0.0.1:80"/' "$deploy/compose-policy.yaml" > "$tmp/compose.yaml"
  python3 - "$deploy/kubernetes/rempart.yaml" "$tmp/kubernetes.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
policy = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["policy.yaml"]
open(sys.argv[2], "w").write(policy.replace("woocommerce.shop.svc.cluster.local:80", "127.0.0.1:80"))
EOF
  for p in container compose kubernetes; do
    if "$bin" check --config "$tmp/$p.yaml" >"$tmp/out" 2>&1; then ok "rempart check: $p policy"; else bad "rempart check: $p policy: $(cat "$tmp/out")"; fi
  done
else
  echo "skip  no rempart binary at $bin (cargo build --release)"
fi

exit "$failed"
