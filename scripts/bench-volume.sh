#!/usr/bin/env bash
# Measures a volume backup and restore against `tar -c | zstd -3 -T0 | age` on the same
# tree: wall time, CPU time, peak RSS, bytes stored. The tree (default about 1.1 GB) has
# many small files (20,000 text files in 200 directories) and a few large ones (text-like
# data that compresses about 3:1).
#   scripts/bench-volume.sh [--large-mib N]     (N: size of each of the 4 large files, default 240)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
large=240
while [ $# -gt 0 ]; do
  case "$1" in
    --large-mib) large=$2; shift 2 ;;
    *) echo "usage: $0 [--large-mib N]" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh >/dev/null
cargo build --release --locked -q --bin backstop
bs="$root/target/release/backstop"
work=$(mktemp -d /tmp/backstop-vbench.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "building the tree ..." >&2
python3 - "$work/tree" "$large" <<'PY'
import os, sys, random, hashlib
root, large = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
words = [hashlib.md5(str(i).encode()).hexdigest()[: rnd.randint(3, 12)] for i in range(5000)]
for d in range(200):
    dd = os.path.join(root, "small", f"d{d:03}")
    os.makedirs(dd)
    for f in range(100):
        n = rnd.randint(200, 12000)
        text = " ".join(rnd.choice(words) for _ in range(n // 7))
        with open(os.path.join(dd, f"f{f:03}.txt"), "w") as fh:
            fh.write(text)
os.makedirs(os.path.join(root, "large"))
block = " ".join(rnd.choice(words) for _ in range(300000)).encode()
for i in range(4):
    with open(os.path.join(root, "large", f"blob{i}.dat"), "wb") as fh:
        left = large << 20
        j = 0
        while left > 0:
            chunk = hashlib.sha256(f"{i}-{j}".encode()).hexdigest().encode() + block
            fh.write(chunk[:left])
            left -= min(left, len(chunk))
            j += 1
PY
size=$(du -sb "$work/tree" | cut -f1)
files=$(find "$work/tree" -type f | wc -l)
sync

age-keygen -o "$work/key.txt" 2>/dev/null
recip=$(age-keygen -y "$work/key.txt")
mkdir -p "$work/jobs"
cat > "$work/jobs/vol.toml" <<TOML
[source]
type = "volume"
path = "$work/tree"
[storage]
url = "file://$work/store"
[encryption]
recipients = ["$recip"]
identity_file = "$work/key.txt"
[compression]
level = 3
TOML
export BACKSTOP_STATE_DIR="$work/state"

results=()
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r wall user sys rss < "$work/time"
  results+=("$(awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v b="$size" 'BEGIN { printf "%-38s %7.1f s %7.1f s %7.0f MiB %7.0f MB/s", n, w, u + s, r / 1024, b / w / 1e6 }')")
}

for round in 1 2 3; do
  rm -rf "$work/store" "$work/oneliner.age"
  measure "tar -c | zstd -3 -T0 | age  (run $round)" bash -c "set -o pipefail; tar -C '$work/tree' -cf - . | zstd -q -3 -T0 | age -r $recip > '$work/oneliner.age'"
  measure "backstop backup             (run $round)" "$bs" --jobs "$work/jobs" -q backup vol
done
measure "backstop restore --to (checked)" "$bs" --jobs "$work/jobs" -q restore vol --to "$work/restored"
measure "age -d | zstd -d | tar -x" bash -c "set -o pipefail; mkdir -p '$work/byhand' && age -d -i '$work/key.txt' '$work/oneliner.age' | zstd -q -d | tar -C '$work/byhand' -xf -"
stored=$(du -sb "$work/store" | cut -f1)
oneliner=$(stat -c %s "$work/oneliner.age")
diff -r "$work/tree" "$work/restored" >/dev/null && same=yes || same=NO

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; tree: $files files, $(numfmt --to=iec-i --suffix=B "$size")"
echo "stored: backstop $(numfmt --to=iec-i --suffix=B "$stored"), one-liner $(numfmt --to=iec-i --suffix=B "$oneliner")"
printf '%-38s %9s %9s %11s %11s\n' run wall cpu "peak RSS" rate
printf '%s\n' "${results[@]}"
echo "restored tree identical to the source (diff -r): $same"
