#!/bin/sh
# The example site's build: it writes the site into public/, which trueup copies into
# the release folder. BUILD_DELAY (seconds) makes it slow, to try a kill mid-build.
set -eu
sleep "${BUILD_DELAY:-0}"
mkdir -p public
cp index.html style.css public/
echo "built $(grep -o 'version [0-9]*' index.html)"
