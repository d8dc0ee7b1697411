#!/usr/bin/env bash
# Install the Debian packages SIEVE needs, only when they are missing (idempotent, quiet).
#   iverilog               - the simulator cocotb drives
#   dataset-fashion-mnist  - the default data set (idx files under /usr/share/datasets/)
#   g++                    - compiles the CXXRTL model of `make verify-exhaustive`
#   opensta                - static timing and power of the sky130-mapped engines (`make synth`, binary `sta`)
set -euo pipefail
need=()
command -v iverilog >/dev/null 2>&1 || need+=(iverilog)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v sta >/dev/null 2>&1 || need+=(opensta)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
