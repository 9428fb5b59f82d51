#!/usr/bin/env bash
# Build the local image plane-NAME:latest from the folder DIR, only when DIR's
# sources changed since the image was built.
#
#   deploy/build-image.sh NAME DIR
#
# The sources are every file in DIR and in deploy/images/common (the code that
# images' build.sh may compile in) that git does not ignore; their sha256 is
# kept in the image's label dev.plane.source-hash. When the image carries the
# same hash, nothing is compiled or built. Otherwise DIR/build.sh (if any) runs
# first (it builds git-ignored outputs into DIR), then `docker build DIR`.
# DIR/sources.txt, if there, names more paths (relative to the repository) whose
# files count as sources too. BUILD_ARGS are passed to `docker build` (and count
# too). DOCKER names the docker command (default: docker).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 NAME DIR" >&2
    exit 2
fi
name=$1
dir=$(cd "$2" && pwd)
common=$(cd "$(dirname "${BASH_SOURCE[0]}")/images/common" && pwd)
image="plane-$name:latest"
label=dev.plane.source-hash
read -r -a docker <<<"${DOCKER:-docker}"

log() { printf 'build-image: %s\n' "$*"; }

# The source files of the folder $1, relative to it, NUL-separated and sorted.
source_files() {
    local dir=$1
    if git -C "$dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$dir" && git ls-files -z --cached --others --exclude-standard -- .)
    else
        # no git: every file but those named in DIR/.gitignore (simple patterns only)
        local patterns=() pattern file skip
        if [ -f "$dir/.gitignore" ]; then
            while IFS= read -r pattern; do
                pattern=${pattern%%#*}
                pattern=${pattern//[[:space:]]/}
                [ -n "$pattern" ] && patterns+=("${pattern#/}")
            done <"$dir/.gitignore"
        fi
        (cd "$dir" && find . -type f -print0) | while IFS= read -r -d '' file; do
            file=${file#./}
            skip=0
            for pattern in "${patterns[@]+"${patterns[@]}"}"; do
                # shellcheck disable=SC2053  # the pattern is a glob on purpose
                [[ $file == $pattern ]] && skip=1
            done
            [ "$skip" -eq 0 ] && printf '%s\0' "$file"
        done
    fi | LC_ALL=C sort -z -u
}

# One line "SHA256  $2FILE" for each source file of the folder $1.
file_hashes() {
    local dir=$1 prefix=$2 file
    source_files "$dir" | while IFS= read -r -d '' file; do
        [ -f "$dir/$file" ] || continue # deleted but still in the index
        printf '%s  %s\n' "$(sha256sum <"$dir/$file" | cut -d' ' -f1)" "$prefix$file"
    done
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a build_args <<<"${BUILD_ARGS:-}"

source_hash() {
    {
        file_hashes "$dir" ""
        [ "$common" = "$dir" ] || file_hashes "$common" "common/"
        if [ -f "$dir/sources.txt" ]; then
            while IFS= read -r extra; do
                [ -n "$extra" ] || continue
                if [ -d "$root/$extra" ]; then
                    file_hashes "$root/$extra" "$extra/"
                else
                    printf '%s  %s\n' "$(sha256sum <"$root/$extra" | cut -d' ' -f1)" "$extra"
                fi
            done <"$dir/sources.txt"
        fi
        printf 'build args: %s\n' "${BUILD_ARGS:-}"
    } | sha256sum | cut -d' ' -f1
}

hash=$(source_hash)
current=$("${docker[@]}" image inspect "$image" \
    --format "{{ index .Config.Labels \"$label\" }}" 2>/dev/null || true)
if [ "$current" = "$hash" ]; then
    echo "$image is up to date"
    exit 0
fi
log "$image needs a build (source hash $hash)"
if ! "${docker[@]}" version >/dev/null 2>&1; then
    log "'${DOCKER:-docker}' does not reach a Docker engine (run: bash deploy/ensure-docker.sh)" >&2
    exit 1
fi
old_id=$("${docker[@]}" image inspect "$image" --format '{{.Id}}' 2>/dev/null || true)

if [ -f "$dir/build.sh" ]; then
    log "compiling with $dir/build.sh"
    bash "$dir/build.sh"
fi

# BuildKit when the client has it (buildx), else the classic builder.
if [ -z "${DOCKER_BUILDKIT:-}" ]; then
    if "${docker[@]}" buildx version >/dev/null 2>&1; then
        export DOCKER_BUILDKIT=1
    else
        export DOCKER_BUILDKIT=0
    fi
fi
log "building $image from $dir"
"${docker[@]}" build "${build_args[@]+"${build_args[@]}"}" --label "$label=$hash" -t "$image" "$dir"

# the previous build, now untagged: drop it unless a container still uses it
new_id=$("${docker[@]}" image inspect "$image" --format '{{.Id}}')
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    "${docker[@]}" image rm "$old_id" >/dev/null 2>&1 || true
fi
log "built $image"
