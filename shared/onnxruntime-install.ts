// How a GPU host gets onnxruntime-node's CUDA provider. The package's install script downloads
// the CUDA binaries from NuGet, which fails on offline hospital machines, so package.json's
// allowScripts keeps npm from running it; a connected GPU host runs it by hand, in the fedlora folder.
export const ORT_CUDA_INSTALL_COMMAND = 'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js';
