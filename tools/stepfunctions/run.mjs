// Runs one execution of a Step Functions state machine in
// aws-local-stepfunctions, with its Lambda Task states bound to functions
// running under the Lambda Runtime Interface Emulator:
//
//   node --import ./shim.mjs run.mjs DEFINITION.json [-s NAME=VALUE]... [-l ARN=URL]... [-r STATE=MS]... < INPUT.json
//
// -s substitutes ${NAME} in the definition, as CloudFormation's
// DefinitionSubstitutions do. -l sends every Task state whose Resource is ARN
// to the emulator's invoke endpoint URL (…/2015-03-31/functions/function/invocations),
// with the state's input as the payload, as Step Functions invokes a function
// named by its ARN. An emulator runs one invocation at a time (as one Lambda
// execution environment does), so -l takes a comma-separated list of URLs,
// one per environment, and an invocation waits for a free one. A function error ({"errorType", "errorMessage"}) becomes
// the state's error: its name is the errorType (what Retry and Catch match)
// and its cause the error object as JSON, as in Step Functions. -r pauses MS
// milliseconds before each retry of STATE instead of what its Retry says.
//
// It prints one JSON object: {"Output": the execution's output,
// "Invocations": [{"State", "Payload", "Response" or "Error"}...]}, or, when
// the execution fails, {"Error": name, "Cause": message, "Invocations": …}
// and exits 1. Usage errors exit 2.
import { readFileSync } from 'node:fs';
import { StateMachine } from 'aws-local-stepfunctions';

function usage(msg) {
  process.stderr.write(`run.mjs: ${msg}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const substitutions = {};
const lambdas = {};
const retryIntervals = {};
let definitionFile;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '-s' || a === '-l' || a === '-r') {
    const kv = args[++i];
    const eq = kv === undefined ? -1 : kv.indexOf('=');
    if (eq < 1) usage(`${a} takes NAME=VALUE`);
    const [k, v] = [kv.slice(0, eq), kv.slice(eq + 1)];
    if (a === '-r') {
      if (!/^[0-9]+$/.test(v)) usage(`-r ${kv}: want STATE=MILLISECONDS`);
      retryIntervals[k] = Number(v);
    } else if (a === '-s') {
      substitutions[k] = v;
    } else {
      lambdas[k] = pool(v.split(','));
    }
  } else if (definitionFile === undefined) {
    definitionFile = a;
  } else {
    usage(`unexpected argument ${a}`);
  }
}
if (definitionFile === undefined) usage('no definition file');

let text = readFileSync(definitionFile, 'utf8');
text = text.replace(/\$\{([^}]+)\}/g, (m, name) => {
  if (!(name in substitutions)) usage(`${definitionFile}: no value for \${${name}}`);
  return substitutions[name];
});
const definition = JSON.parse(text);
const input = JSON.parse(readFileSync(0, 'utf8'));

const invocations = [];

// pool hands out the URLs one invocation at a time each.
function pool(urls) {
  const free = [...urls];
  const waiting = [];
  return {
    async take() {
      if (free.length > 0) return free.shift();
      return new Promise((resolve) => waiting.push(resolve));
    },
    give(url) {
      const next = waiting.shift();
      if (next) next(url);
      else free.push(url);
    },
  };
}

// invoke sends payload to a free environment of the function, as Lambda's
// Invoke does.
async function invoke(state, environments, payload) {
  const record = { State: state, Payload: payload };
  invocations.push(record);
  const url = await environments.take();
  let resp, body;
  try {
    resp = await fetch(url, { method: 'POST', body: JSON.stringify(payload) });
    body = await resp.text();
  } finally {
    environments.give(url);
  }
  if (resp.status !== 200) {
    const e = new Error(`the emulator answered ${resp.status}: ${body}`);
    e.name = 'Lambda.ServiceException';
    record.Error = { Error: e.name, Cause: e.message };
    throw e;
  }
  const value = body === '' ? null : JSON.parse(body);
  const isError = resp.headers.has('x-amz-function-error') ||
    (value !== null && typeof value === 'object' && typeof value.errorType === 'string' && typeof value.errorMessage === 'string');
  if (isError) {
    const e = new Error(JSON.stringify(value));
    e.name = value.errorType ?? 'Lambda.Unknown';
    record.Error = { Error: e.name, Cause: e.message };
    throw e;
  }
  record.Response = value;
  return value;
}

// Bind every Task state, at any depth (Map item processors, Parallel
// branches), whose Resource is one of the functions.
const handlers = {};
function bind(states) {
  for (const [name, state] of Object.entries(states ?? {})) {
    if (state.Type === 'Task') {
      const environments = lambdas[state.Resource];
      if (environments === undefined) usage(`Task state ${name}: no -l for its Resource ${state.Resource}`);
      if (name in handlers) usage(`Task state ${name} appears twice: the engine binds handlers by state name`);
      handlers[name] = (payload) => invoke(name, environments, payload);
    }
    bind((state.ItemProcessor ?? state.Iterator)?.States);
    for (const b of state.Branches ?? []) bind(b.States);
  }
}
bind(definition.States);

const machine = new StateMachine(definition);
const execution = machine.run(input, { overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides: retryIntervals } });
try {
  const output = await execution.result;
  process.stdout.write(JSON.stringify({ Output: output, Invocations: invocations }) + '\n');
} catch (err) {
  const cause = err.cause ?? err;
  process.stdout.write(JSON.stringify({ Error: cause.name, Cause: cause.message, Invocations: invocations }) + '\n');
  process.exit(1);
}
