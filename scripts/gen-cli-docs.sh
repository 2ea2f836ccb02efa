#!/usr/bin/env bash
# Regenerates docs/cli.md from the built binary's --help texts (tests/cli checks they agree).
#   scripts/gen-cli-docs.sh [path/to/idsynth] [output, default docs/cli.md]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/cli/idsynth}
out=${2:-docs/cli.md}
{
  echo "# idsynth command line"
  echo
  echo "Generated from \`idsynth --help\` and \`idsynth <command> --help\` by \`scripts/gen-cli-docs.sh\`;"
  echo "\`tests/cli\` fails when this file and the binary disagree."
  echo
  echo '```'
  "$bin" --help
  echo '```'
  for cmd in $("$bin" --help | awk '/^commands:/{f=1;next} /^$/{f=0} f{print $1}'); do
    echo
    echo "## idsynth $cmd"
    echo
    echo '```'
    "$bin" "$cmd" --help
    echo '```'
    # Commands with subcommands print "usage: idsynth CMD <a|b|c> ...": document each one.
    subs=$("$bin" "$cmd" --help | sed -n "s/^usage: idsynth $cmd <\([a-z|-]*\)>.*/\1/p" | tr '|' ' ')
    for sub in $subs; do
      echo
      echo "### idsynth $cmd $sub"
      echo
      echo '```'
      "$bin" "$cmd" "$sub" --help
      echo '```'
    done
  done
} > "$out"
echo "wrote $out"
