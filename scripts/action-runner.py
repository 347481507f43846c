#!/usr/bin/env python3
"""Runs a composite GitHub Action's steps here, the way the runner does, for scripts/test-install.sh.

    action-runner.py STATE ACTION_DIR [INPUT=VALUE ...]   run ACTION_DIR/action.yml
    action-runner.py STATE --exec CMD [ARG ...]           run a later step's command

STATE is a directory standing for one job: its environment (what steps wrote to GITHUB_ENV and
GITHUB_PATH carries over to later steps, as on GitHub), RUNNER_TEMP, and the job summary file.
Each `run:` step runs with its `shell` (sh or bash) and its `env:`, after the expressions in
them are evaluated. Only the contexts the actions here use are known (inputs, steps.*.outputs,
github.repository); anything else is an error, so the test fails rather than runs something else.
"""

import json
import os
import re
import subprocess
import sys
import uuid

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def fail(msg):
    print(f"action-runner: {msg}", file=sys.stderr)
    sys.exit(2)


def load_state(state):
    os.makedirs(state, exist_ok=True)
    path = os.path.join(state, "env.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    temp = os.path.join(state, "runner-temp")
    os.makedirs(temp, exist_ok=True)
    env = dict(os.environ)
    env.update(
        RUNNER_TEMP=temp,
        GITHUB_REPOSITORY="example/repo",
        GITHUB_STEP_SUMMARY=os.path.join(state, "summary.md"),
    )
    return env


def save_state(state, env):
    with open(os.path.join(state, "env.json"), "w") as f:
        json.dump(env, f)


def evaluate(text, ctx):
    def one(m):
        expr = m.group(1)
        parts = expr.split(".")
        if parts[0] == "inputs" and len(parts) == 2:
            return ctx["inputs"][parts[1]]
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return ctx["steps"].get(parts[1], {}).get(parts[3], "")
        if expr == "github.repository":
            return ctx["env"]["GITHUB_REPOSITORY"]
        fail(f"unsupported expression: {expr}")

    return EXPR.sub(one, str(text))


def read_file_commands(path):
    """GITHUB_ENV / GITHUB_OUTPUT syntax: NAME=value lines or NAME<<DELIM ... DELIM blocks."""
    out = {}
    if not os.path.exists(path):
        return out
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            while i < len(lines) and lines[i] != delim:
                value.append(lines[i])
                i += 1
            if i == len(lines):
                fail(f"{path}: no closing {delim}")
            i += 1
            out[name] = "\n".join(value)
        else:
            name, _, value = line.partition("=")
            out[name] = value
    return out


def run_action(state, action_dir, given):
    env = load_state(state)
    with open(os.path.join(action_dir, "action.yml")) as f:
        action = yaml.safe_load(f)
    if action["runs"]["using"] != "composite":
        fail("not a composite action")
    declared = action.get("inputs", {})
    for k in given:
        if k not in declared:
            fail(f"input {k} is not declared by {action_dir}/action.yml")
    ctx = {"inputs": {}, "steps": {}, "env": env}
    for name, spec in declared.items():
        ctx["inputs"][name] = given.get(name, evaluate(spec.get("default", ""), ctx))
    for n, step in enumerate(action["runs"]["steps"]):
        if "run" not in step:
            fail(f"step {n} is not a run step")
        shell = step.get("shell")
        if shell not in ("sh", "bash"):
            fail(f"step {n}: shell {shell!r}")
        files = {}
        for cmd in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT"):
            files[cmd] = os.path.join(state, f"{cmd.lower()}-{uuid.uuid4().hex}")
            open(files[cmd], "w").close()
        step_env = dict(env, GITHUB_ACTION_PATH=os.path.abspath(action_dir), **files)
        for k, v in (step.get("env") or {}).items():
            step_env[k] = evaluate(v, ctx)
        script = os.path.join(state, f"step-{uuid.uuid4().hex}.sh")
        with open(script, "w") as f:
            f.write(evaluate(step["run"], ctx))
        # GitHub runs shell: sh as `sh -e {0}` and shell: bash as `bash --noprofile --norc -eo pipefail {0}`.
        argv = ["sh", "-e", script] if shell == "sh" else ["bash", "--noprofile", "--norc", "-eo", "pipefail", script]
        rc = subprocess.call(argv, env=step_env)
        if rc != 0:
            save_state(state, env)
            print(f"action-runner: step {step.get('id', n)} failed with exit code {rc}", file=sys.stderr)
            sys.exit(1)
        env.update(read_file_commands(files["GITHUB_ENV"]))
        with open(files["GITHUB_PATH"]) as f:
            for d in f.read().split("\n"):
                if d:
                    env["PATH"] = d + os.pathsep + env["PATH"]
        if "id" in step:
            ctx["steps"][step["id"]] = read_file_commands(files["GITHUB_OUTPUT"])
    save_state(state, env)


def main():
    if len(sys.argv) < 3:
        fail(__doc__)
    state = sys.argv[1]
    if sys.argv[2] == "--exec":
        env = load_state(state)
        sys.exit(subprocess.call(sys.argv[3:], env=env))
    given = {}
    for arg in sys.argv[3:]:
        k, sep, v = arg.partition("=")
        if not sep:
            fail(f"not INPUT=VALUE: {arg}")
        given[k] = v
    run_action(state, sys.argv[2], given)


if __name__ == "__main__":
    main()
