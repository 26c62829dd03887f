// Types of player.js (the AudioWorklet player). See README.md.

export interface PlayerStats {
  /** Input samples pushed since begin(). */
  received: number;
  /** Input samples played since begin(). */
  consumed: number;
  /** Output frames (at the context's rate) that carried audio since begin(). */
  played: number;
  underruns: number;
  /** Output frames of silence inside the stream because the buffer was empty. */
  underrunFrames: number;
  buffered: number;
  playing: boolean;
  active: boolean;
  inputRate: number;
  outputRate: number;
  frame: number;
}

export interface CancelResult { type: "cancelled"; frame: number; dropped: number }

export declare class NutqPlayer {
  static create(options?: { audioContext?: AudioContext | null; jitterMs?: number; workletUrl?: string | URL }): Promise<NutqPlayer>;
  readonly audioContext: AudioContext;
  readonly node: AudioWorkletNode;
  jitterMs: number;
  firstSoundMs: number | null;
  underruns: number;
  onfirstsound: ((ms: number) => void) | null;
  onunderrun: ((count: number) => void) | null;
  onposition: ((seconds: number) => void) | null;
  begin(options?: { rate?: number; jitterMs?: number }): void;
  push(samples: Float32Array, rate?: number): void;
  end(): void;
  cancel(): Promise<CancelResult>;
  stats(): Promise<PlayerStats>;
  drained(): Promise<void>;
}
