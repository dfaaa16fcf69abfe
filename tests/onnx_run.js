// Runs an ONNX file with ONNX Runtime (npm's onnxruntime-node) on float32
// inputs and writes the first output as raw float32.
//   node tests/onnx_run.js MODEL INPUT.f32 d0,d1,... OUTPUT.f32 [INPUT2.f32 dims ...]
// The inputs feed the model's inputs in the order the graph lists them.
// The module is looked up in NN_ONNXRUNTIME_DIR (its node_modules), where
// `make test` installs it. Exit status 2: the module cannot be loaded.
'use strict';
const fs = require('fs');
const path = require('path');
let ort;
try {
    const dir = process.env.NN_ONNXRUNTIME_DIR || '.cache/onnxruntime';
    ort = require(path.resolve(dir, 'node_modules', 'onnxruntime-node'));
} catch (e) {
    console.log('onnx_run: onnxruntime-node cannot be loaded: ' + e.message.split('\n')[0]);
    process.exit(2);
}
async function main() {
    const [model, input, dims, output, ...more] = process.argv.slice(2);
    const pairs = [[input, dims]];
    for (let k = 0; k + 1 < more.length; k += 2) pairs.push([more[k], more[k + 1]]);
    // One thread and no graph rewrites: the runtime computes each node as
    // written, so the comparison is with the operators themselves.
    const session = await ort.InferenceSession.create(model, {
        intraOpNumThreads: 1, graphOptimizationLevel: 'disabled'});
    if (pairs.length !== session.inputNames.length)
        throw new Error(`${pairs.length} inputs given, the model has ${session.inputNames.length}`);
    const feeds = {};
    pairs.forEach(([file, d], k) => {
        const buf = fs.readFileSync(file);
        const x = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
        feeds[session.inputNames[k]] = new ort.Tensor('float32', x, d.split(',').map(Number));
    });
    const result = await session.run(feeds);
    const y = result[session.outputNames[0]];
    fs.writeFileSync(output, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    console.log(`onnx_run: ${model}: output ${session.outputNames[0]} (${y.dims.join('x')})`);
}
main().catch((e) => { console.log('onnx_run: ' + e.message); process.exit(1); });
