// aws-local-stepfunctions 3.0.0 declares Node >= 22 for one call,
// Promise.withResolvers; Node 20 lacks it. Loaded first (node --import).
if (typeof Promise.withResolvers !== 'function') Promise.withResolvers = function () { let resolve, reject; const promise = new this((res, rej) => { resolve = res; reject = rej; }); return { promise, resolve, reject }; };
