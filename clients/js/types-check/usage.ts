// Compiled (never run) by the type check: the README's example against nutq.d.ts / player.d.ts.
import { NutqClient, NutqError, type ContextEvent } from "../nutq.js";
import { NutqPlayer } from "../player.js";

export async function example(): Promise<number> {
  const player = await NutqPlayer.create({ jitterMs: 60 });
  const client = new NutqClient("ws://127.0.0.1:8000", { voice: "default", output_format: "pcm_s16le" });
  const ctx = client.context();
  player.begin({ rate: ctx.sampleRate });
  ctx.sendText("مرحبا بكم. ");
  ctx.close();
  try {
    for await (const ev of ctx as AsyncIterable<ContextEvent>) {
      if (ev.type === "audio" && ev.samples) player.push(ev.samples, ev.sampleRate);
      else if (ev.type === "done") player.end();
    }
  } catch (e) {
    if (e instanceof NutqError && e.retryable) return -1;
    throw e;
  }
  await player.drained();
  return (await player.stats()).underruns;
}
