#!/usr/bin/env bash
# Run on a Debian machine with network access to its mirror (the development machine), before a GPU run:
# fetches the Debian packages tessera needs that a bare GPU machine lacks (yaml-cpp, spdlog, fmt, CLI11,
# nlohmann-json headers and libraries, GoogleTest sources) and unpacks them under .gpu-deps/ (ignored by
# git), which travels with the tree to the GPU machine (device run: carry [".gpu-deps"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu-deps
packages=(libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
          nlohmann-json3-dev googletest)
rm -rf "$out" && mkdir -p "$out/debs"
(cd "$out/debs" && apt-get -o APT::Sandbox::User=root download "${packages[@]}" >/dev/null)
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$out/root"; done
rm -rf "$out/debs"
echo "unpacked ${#packages[@]} packages into $out/root ($(du -sh "$out" | cut -f1))"
