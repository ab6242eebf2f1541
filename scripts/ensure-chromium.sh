#!/bin/sh
# Install headless Chromium for the HTML-report rendering test where the system allows it.
# Never fails: without Chromium that one test is skipped (and says so).
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; the browser rendering test will be skipped"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no passwordless sudo; the browser rendering test will be skipped"
    exit 0
fi
echo "ensure-chromium: installing chromium and chromium-driver (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
timeout 600 $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
    || { timeout 300 $SUDO apt-get update -q >/dev/null 2>&1 \
         && timeout 600 $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; } \
    || echo "ensure-chromium: could not install Chromium; the browser rendering test will be skipped"
exit 0
