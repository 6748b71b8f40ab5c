#!/usr/bin/env bash
# Re-vendors the patched upstream crates of vendor/ from their published sources.
#
# Each vendored crate is its published .crate from crates.io plus one patch,
# vendor/patches/<name>-<version>.patch (the version in the file name is the published one).
# The packaging files cargo adds to a .crate (.cargo_vcs_info.json, Cargo.toml.orig,
# Cargo.lock) are left out; everything else that differs is in the patch.
#
#   scripts/vendor.sh [NAME...]             write vendor/NAME = published + patch
#   scripts/vendor.sh --check [NAME...]     only verify that vendor/NAME = published + patch
#   scripts/vendor.sh --diff [NAME...]      re-record the patch from vendor/NAME (after editing it)
#   scripts/vendor.sh --to VERSION NAME     move NAME to another published version: re-apply the
#                                           patch (hunks that no longer fit are left as .rej files
#                                           in vendor/NAME), rename the patch to the new version;
#                                           for a crate without a patch yet, write the published
#                                           source to vendor/NAME (edit it, then --diff NAME)
#
# Without NAME: every crate that has a patch. The published sources come through cargo itself
# (a throw-away project depending on NAME = "=VERSION", then `cargo fetch`): offline from
# cargo's cache when it has them, from crates.io otherwise. See vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
patches=$root/vendor/patches
# Files `cargo package` adds to a .crate that are not the crate's source.
packaging=(.cargo_vcs_info.json Cargo.toml.orig Cargo.lock)

die() { echo "vendor.sh: $*" >&2; exit 1; }

mode=write
to_version=
case "${1:-}" in
  --check) mode=check; shift ;;
  --diff) mode=diff; shift ;;
  --to)
    mode=to
    [ $# -eq 3 ] || die "usage: scripts/vendor.sh --to VERSION NAME"
    to_version=$2
    shift 2
    ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) die "unknown option $1 (see --help)" ;;
esac

# The patch file of NAME (exactly one), or nothing when it has none.
patch_or_none() {
  local found=("$patches/$1"-[0-9]*.patch)
  [ -f "${found[0]}" ] || return 0
  [ ${#found[@]} -eq 1 ] || die "more than one patch for $1: ${found[*]}"
  echo "${found[0]}"
}

# The patch file of NAME (exactly one).
patch_of() {
  local p
  p=$(patch_or_none "$1")
  [ -n "$p" ] || die "no patch for $1 in vendor/patches (expected $1-<version>.patch)"
  echo "$p"
}

# The [package] version in vendor/NAME/Cargo.toml.
vendored_version() {
  local v
  v=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' "$root/vendor/$1/Cargo.toml" 2>/dev/null)
  [ -n "$v" ] || die "no [package] version in vendor/$1/Cargo.toml"
  echo "$v"
}

# NAME and VERSION from vendor/patches/NAME-VERSION.patch.
split_patch_name() {
  local base=${1##*/}
  base=${base%.patch}
  [[ $base =~ ^(.+)-([0-9]+\.[0-9]+\.[0-9]+.*)$ ]] || die "cannot read NAME-VERSION from $1"
  echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for p in "$patches"/*.patch; do
    [ -f "$p" ] || die "no patches in vendor/patches"
    nv=$(split_patch_name "$p")
    names+=("${nv% *}")
  done
  # Every vendored crate must have its patch (a tree nobody can reproduce is what this prevents).
  for d in "$root"/vendor/*/; do
    d=${d%/}
    n=${d##*/}
    [ "$n" = patches ] && continue
    patch_of "$n" >/dev/null
  done
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# git apply and git diff --no-index below must never look for a repository around $tmp.
export GIT_CEILING_DIRECTORIES=$(dirname "$tmp")
git_() {
  git -c core.quotepath=off -c diff.noprefix=false -c diff.mnemonicPrefix=false \
    -c diff.renames=false -c color.ui=never "$@"
}

# Downloads NAME=VERSION pairs into cargo's cache through a throw-away project.
fetch() {
  local proj=$tmp/fetch
  mkdir -p "$proj/src"
  : > "$proj/src/lib.rs"
  {
    printf '[package]\nname = "camesh-vendor-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
    printf '# Not part of any workspace around the temporary folder.\n[workspace]\n\n[dependencies]\n'
    local pair
    for pair in "$@"; do printf '%s = "=%s"\n' "${pair% *}" "${pair#* }"; done
  } > "$proj/Cargo.toml"
  # Start from the workspace's lock: the crates' dependencies resolve to what is already in
  # cargo's cache, so only the published crates themselves may need downloading.
  cp "$root/Cargo.lock" "$proj/Cargo.lock"
  local host
  host=$(rustc -vV | sed -n 's/^host: //p')
  if ! (cd "$proj" && cargo fetch --offline --target "$host" >/dev/null 2>&1); then
    (cd "$proj" && cargo fetch --target "$host" --quiet) ||
      die "cargo could not fetch ${*} (offline and from crates.io)"
  fi
}

# The published source of NAME VERSION without the packaging files, in directory $3.
published() {
  local name=$1 version=$2 out=$3 crate
  local cache=${CARGO_HOME:-$HOME/.cargo}/registry/cache
  crate=$(ls "$cache"/*/"$name-$version.crate" 2>/dev/null | head -n 1)
  [ -n "$crate" ] || die "$name-$version.crate is not in $cache after cargo fetch"
  mkdir -p "$tmp/unpack"
  tar -xzf "$crate" -C "$tmp/unpack"
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  mv "$tmp/unpack/$name-$version" "$out"
  local f
  for f in "${packaging[@]}"; do rm -f "$out/$f"; done
}

# Applies patch $1 in directory $2; with --reject as $3, keeps what fits and leaves .rej files.
apply() {
  (cd "$2" && git_ apply -p1 --whitespace=nowarn ${3:-} "$1")
}

# Writes the patch that turns published NAME VERSION into vendor/NAME, keeping the description
# (the lines before the first "diff --git") of the patch it replaces.
record() {
  local name=$1 version=$2 old=$3 new=$patches/$1-$2.patch
  published "$name" "$version" "$tmp/rec/a"
  rm -rf "$tmp/rec/b"
  cp -a "$root/vendor/$name" "$tmp/rec/b"
  if find "$tmp/rec/b" \( -name '*.rej' -o -name '*.orig' \) | grep -q .; then
    die "vendor/$name still has .rej/.orig files: resolve them first"
  fi
  {
    if [ -f "$old" ]; then sed '/^diff --git /,$d' "$old"; fi
    # Exit status 1 only says "there are differences".
    (cd "$tmp/rec" && git_ diff --no-index --no-color --no-ext-diff --full-index \
      --src-prefix= --dst-prefix= a b) || [ $? -eq 1 ]
  } > "$tmp/new.patch"
  grep -q '^diff --git ' "$tmp/new.patch" ||
    die "vendor/$name is the published $name $version: no patch left (to drop it, see vendor/README.md)"
  mv "$tmp/new.patch" "$new"
  if [ -f "$old" ] && [ "$old" != "$new" ]; then rm -f "$old"; fi
  echo "vendor.sh: recorded vendor/patches/${new##*/}"
}

pairs=()
for n in "${names[@]}"; do
  p=$(patch_or_none "$n")
  if [ "$mode" = to ]; then
    v=$to_version
  elif [ -n "$p" ]; then
    nv=$(split_patch_name "$p")
    v=${nv#* }
  elif [ "$mode" = diff ]; then
    v=$(vendored_version "$n")
  else
    patch_of "$n" >/dev/null
  fi
  pairs+=("$n $v")
done
fetch "${pairs[@]}"

failed=0
for pair in "${pairs[@]}"; do
  n=${pair% *}
  v=${pair#* }
  p=$(patch_or_none "$n")
  case $mode in
    write | check)
      published "$n" "$v" "$tmp/expect/$n"
      apply "$p" "$tmp/expect/$n" || die "${p#"$root"/} does not apply to the published $n $v"
      if [ "$mode" = write ]; then
        rm -rf "$root/vendor/$n"
        cp -a "$tmp/expect/$n" "$root/vendor/$n"
        echo "vendor.sh: wrote vendor/$n ($n $v + ${p##*/})"
      elif [ ! -d "$root/vendor/$n" ]; then
        echo "vendor.sh: vendor/$n is missing (scripts/vendor.sh $n writes it)" >&2
        failed=1
      elif ! (mkdir -p "$tmp/vendor" && cp -a "$root/vendor/$n" "$tmp/vendor/$n" && cd "$tmp" &&
        git_ diff --no-index --no-ext-diff --stat --exit-code "expect/$n" "vendor/$n" >&2); then
        echo "vendor.sh: vendor/$n is not the published $n $v + ${p##*/}." >&2
        echo "  Edited vendor/$n on purpose? Record it: scripts/vendor.sh --diff $n" >&2
        echo "  Otherwise restore it: scripts/vendor.sh $n" >&2
        failed=1
      else
        echo "vendor.sh: vendor/$n = $n $v + ${p##*/}"
      fi
      ;;
    diff)
      record "$n" "$v" "$p"
      ;;
    to)
      published "$n" "$v" "$tmp/expect/$n"
      if [ -z "$p" ]; then
        rm -rf "$root/vendor/$n"
        cp -a "$tmp/expect/$n" "$root/vendor/$n"
        echo "vendor.sh: wrote the published $n $v to vendor/$n; make the change, then: scripts/vendor.sh --diff $n"
        continue
      fi
      rejected=0
      apply "$p" "$tmp/expect/$n" --reject || rejected=1
      rm -rf "$root/vendor/$n"
      cp -a "$tmp/expect/$n" "$root/vendor/$n"
      if [ $rejected = 1 ]; then
        mv "$p" "$patches/$n-$v.patch"
        echo "vendor.sh: vendor/$n is now $n $v, but parts of ${p##*/} did not apply:" >&2
        find "$root/vendor/$n" -name '*.rej' -printf '  %P\n' >&2
        echo "  Make the change by hand, delete the .rej files, then: scripts/vendor.sh --diff $n" >&2
        failed=1
      else
        record "$n" "$v" "$p"
        echo "vendor.sh: vendor/$n is now $n $v + the patch; update its row in vendor/README.md"
      fi
      ;;
  esac
done
exit $failed
