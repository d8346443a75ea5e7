#!/usr/bin/env bash
# Builds the Spring Cloud Stream app of the interop tests (tests/interop/spring-app)
# with Maven and caches the jar, keyed by a hash of its sources, at
#   ${CARGO_TARGET_DIR:-<repo>/target}/interop/interop-spring-app-<hash>.jar
# Prints the jar's path on its last line. A warm run (sources unchanged) does
# no Maven work at all. Needs Java 17+ and Maven 3.8+; Maven's dependencies come
# from Maven Central into the local repository (~/.m2 by default).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
app="$root/tests/interop/spring-app"
target="${CARGO_TARGET_DIR:-$root/target}"
cache="$target/interop"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "interop build: \`$1\` is not installed; the Spring apps need Java 17 and Maven 3.8 (Debian: apt-get install openjdk-17-jdk-headless maven)" >&2
        exit 1
    fi
}
need java

hash="$(cd "$app" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
jar="$cache/interop-spring-app-$hash.jar"
if [[ -f "$jar" ]]; then
    echo "$jar"
    exit 0
fi

need mvn
mkdir -p "$cache"
# Maven writes into the source tree's target/; build in a copy under the
# cache folder so the worktree stays clean and parallel builds cannot collide.
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$app/pom.xml" "$app/src" "$work/"
echo "interop build: mvn package in $work (cold: downloads Spring Boot and both binders)" >&2
(cd "$work" && mvn -B -q -DskipTests package) >&2
cp "$work/target/interop-spring-app.jar" "$jar.tmp"
mv "$jar.tmp" "$jar"
echo "$jar"
