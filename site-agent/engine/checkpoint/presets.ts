// The config.json of public DeepSeek checkpoints, field for field, for `fedlora model init-random
// --like NAME`: random weights with exactly these shapes let tests and benchmarks run real sizes
// without downloading anything. Each entry names the Hugging Face repository whose config.json it
// reproduces (written from those published files; no network is used at run time). Only the
// fields a config.json carries are here; transformers' defaults fill the rest exactly as for the
// real checkpoint (checkpoint/config.ts).

export interface ModelPreset {
  /** The Hugging Face repository whose config.json this is. */
  source: string;
  config: Record<string, unknown>;
}

const qwen2Common = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', attention_dropout: 0.0, hidden_act: 'silu', initializer_range: 0.02,
  bos_token_id: 151643, eos_token_id: 151643, sliding_window: 4096, use_sliding_window: false, use_mrope: false,
  max_position_embeddings: 131072, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true,
};

const llamaCommon = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', initializer_range: 0.02, pretraining_tp: 1,
  tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true,
};

export const MODEL_PRESETS: Record<string, ModelPreset> = {
  'deepseek-r1-distill-qwen-1.5b': {
    source: 'https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B/blob/main/config.json',
    config: {
      ...qwen2Common, hidden_size: 1536, intermediate_size: 8960, num_hidden_layers: 28, num_attention_heads: 12, num_key_value_heads: 2,
      max_window_layers: 21, rms_norm_eps: 1e-6, rope_theta: 10000, vocab_size: 151936, transformers_version: '4.44.0',
    },
  },
  'deepseek-r1-distill-qwen-7b': {
    source: 'https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/blob/main/config.json',
    config: {
      ...qwen2Common, hidden_size: 3584, intermediate_size: 18944, num_hidden_layers: 28, num_attention_heads: 28, num_key_value_heads: 4,
      max_window_layers: 28, rms_norm_eps: 1e-6, rope_theta: 10000, vocab_size: 152064, transformers_version: '4.44.0',
    },
  },
  'deepseek-r1-distill-qwen-14b': {
    source: 'https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-14B/blob/main/config.json',
    config: {
      ...qwen2Common, hidden_size: 5120, intermediate_size: 13824, num_hidden_layers: 48, num_attention_heads: 40, num_key_value_heads: 8,
      max_window_layers: 48, rms_norm_eps: 1e-5, rope_theta: 1000000.0, vocab_size: 152064, transformers_version: '4.43.1',
    },
  },
  'deepseek-r1-distill-llama-8b': {
    source: 'https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Llama-8B/blob/main/config.json',
    config: {
      ...llamaCommon, attention_bias: false, attention_dropout: 0.0, mlp_bias: false, bos_token_id: 128000, eos_token_id: 128001,
      hidden_size: 4096, intermediate_size: 14336, max_position_embeddings: 131072, num_attention_heads: 32, num_hidden_layers: 32,
      num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 500000.0, vocab_size: 128256, transformers_version: '4.43.0.dev0',
      rope_scaling: { factor: 8.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    },
  },
  'deepseek-llm-7b': {
    source: 'https://huggingface.co/deepseek-ai/deepseek-llm-7b-base/blob/main/config.json (the chat model has the same shapes)',
    config: {
      ...llamaCommon, bos_token_id: 100000, eos_token_id: 100001, hidden_size: 4096, intermediate_size: 11008, max_position_embeddings: 4096,
      num_attention_heads: 32, num_hidden_layers: 30, num_key_value_heads: 32, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 10000.0,
      vocab_size: 102400, transformers_version: '4.33.1',
    },
  },
  'deepseek-coder-1.3b': {
    source: 'https://huggingface.co/deepseek-ai/deepseek-coder-1.3b-base/blob/main/config.json',
    config: {
      ...llamaCommon, bos_token_id: 32013, eos_token_id: 32014, hidden_size: 2048, intermediate_size: 5504, max_position_embeddings: 16384,
      num_attention_heads: 16, num_hidden_layers: 24, num_key_value_heads: 16, rms_norm_eps: 1e-6, rope_scaling: { factor: 4.0, type: 'linear' },
      rope_theta: 100000, vocab_size: 32256, transformers_version: '4.35.0.dev0',
    },
  },
  'deepseek-coder-6.7b': {
    source: 'https://huggingface.co/deepseek-ai/deepseek-coder-6.7b-base/blob/main/config.json',
    config: {
      ...llamaCommon, bos_token_id: 32013, eos_token_id: 32014, hidden_size: 4096, intermediate_size: 11008, max_position_embeddings: 16384,
      num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32, rms_norm_eps: 1e-6, rope_scaling: { factor: 4.0, type: 'linear' },
      rope_theta: 100000, vocab_size: 32256, transformers_version: '4.33.1',
    },
  },
};

export const PRESET_NAMES = Object.keys(MODEL_PRESETS);
