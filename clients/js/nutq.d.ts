// Types of nutq.js (the native WebSocket protocol client). See README.md.

export declare const RETRYABLE_CLOSE_CODES: Set<number>;
export declare const SETTINGS: Set<string>;

export type OutputFormat = "pcm_s16le" | "pcm_f32le" | "wav" | "wav_f32" | "mulaw" | "alaw" | "mp3" | "opus"
  | "webm_opus" | "flac" | "aac";

/** Settings of the native protocol's `config` message (docs/protocols/native.md). */
export interface Settings {
  voice?: string;
  language?: string;
  output_format?: OutputFormat;
  sample_rate?: number;
  timestamps?: boolean;
  temperature?: number;
  cfg_weight?: number;
  exaggeration?: number | null;
  seed?: number | null;
  max_tokens?: number | null;
  normalize?: boolean;
}

export interface ClientOptions extends Settings {
  reconnect?: boolean;
  maxRetries?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
}

export declare class NutqError extends Error {
  readonly code: string;
  readonly detail: string;
  readonly retryable: boolean;
  readonly contextId: string | null;
  readonly param: string | null;
  readonly status: number | null;
  readonly closeCode: number | null;
  constructor(code: string, message: string, options?: { retryable?: boolean; contextId?: string | null;
    param?: string | null; status?: number | null; closeCode?: number | null });
}

export interface Word { word: string; start: number; end: number; char_start: number; char_end: number }
export interface Timings { first_audio_latency_s: number | null; rtf: number | null; audio_s: number; phrases: number }

export interface AudioEvent {
  type: "audio";
  contextId: string;
  /** The encoded bytes as the server sent them. */
  data: Uint8Array;
  /** Decoded samples in [-1, 1] for pcm_s16le, pcm_f32le, wav, wav_f32, mulaw and alaw; null otherwise. */
  samples: Float32Array | null;
  sampleRate: number;
}
export interface TimestampsEvent { type: "timestamps"; contextId: string; words: Word[] }
export interface FlushedEvent { type: "flushed"; contextId: string }
export interface ResumedEvent { type: "resumed"; contextId: string; charOffset: number; attempt: number }
export interface DoneEvent { type: "done"; contextId: string; reason: "closed" | "cancelled" | "error"; timings: Timings }
export type ContextEvent = AudioEvent | TimestampsEvent | FlushedEvent | ResumedEvent | DoneEvent;

export declare function wsUrl(url: string): string;

export declare class PcmDecoder {
  constructor(format: OutputFormat);
  readonly format: OutputFormat;
  decode(bytes: Uint8Array): Float32Array;
}

export declare class NutqClient {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly defaults: Settings;
  reconnects: number;
  connect(): Promise<void>;
  context(contextId?: string | null, settings?: Settings): NutqContext;
  close(): void;
}

export declare class NutqContext implements AsyncIterable<ContextEvent> {
  readonly id: string;
  readonly outputFormat: OutputFormat;
  readonly sampleRate: number;
  /** All the text given so far. */
  readonly text: string;
  sendText(piece: string): void;
  flush(): void;
  close(): void;
  cancel(): void;
  [Symbol.asyncIterator](): AsyncIterator<ContextEvent>;
}

export interface Voice { id: string; object: "voice"; source: "builtin" | "registered"; created: number | null;
  clip_sha256: string | null; clip_seconds: number | null; exaggeration: number | null }
export declare function listVoices(baseUrl?: string, options?: { apiKey?: string }): Promise<Voice[]>;
