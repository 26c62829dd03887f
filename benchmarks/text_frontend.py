"""Throughput of the Arabic text frontend on a realistic mixed corpus.

    python benchmarks/text_frontend.py [--out benchmarks/results/text_frontend.json] [--rounds 50]
        [--vocab PATH] [--diacritize]

Writes JSON (sentences/s, ms per sentence: mean, p50, p99, max) and prints a one-line summary.
The corpus mixes what the engine sees: news sentences with numbers, dates and money, chat and
LLM output with markdown, emoji and Latin words, short replies.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from nutq.text.frontend import TextFrontend
from nutq.text.vocab import load_vocab_charset

CORPUS = [
    "أعلنت وزارة المالية اليوم أن الإيرادات بلغت 1,250 مليار ريال في عام 2024، بزيادة 12.5% عن العام السابق.",
    "يبدأ الاجتماع الساعة 08:30 صباحا وينتهي في 3:45 م بتوقيت الرياض.",
    "ولد الشاعر في 15/03/1925 وتوفي في 2001-07-09 عن عمر ناهز 76 عاما.",
    "سعر الدولار اليوم 3.75 ريال، والذهب عند $2,350 للأونصة.",
    "للتواصل: اتصل على 0501234567 أو +966 11 234 5678 من 9:00 ص إلى 5:00 م.",
    "**ملخص:**\n- النقطة الأولى: ارتفاع الأسعار 5%\n- النقطة الثانية: انخفاض البطالة",
    "شكرا جزيلا! 😊 سأرسل لك الملف بصيغة PDF خلال 10-15 دقيقة.",
    "هل يمكنك مساعدتي في كتابة رسالة إلى المدير؟",
    "نعم، بالتأكيد.",
    "تقع المدينة على بعد 120 km من العاصمة، ويبلغ عدد سكانها 2.5 مليون نسمة.",
    "حصل الفريق على المركز الـ3 في البطولة الـ21 بعد فوزه 3-1 في المباراة النهائية.",
    "يقول الخبراء إن تقنيات AI ستغير سوق العمل خلال السنوات الـ10 القادمة.",
    "The meeting was productive، وقد اتفقنا على الخطوات التالية.",
    "درجة الحرارة اليوم 42°C في الظل، وستنخفض إلى 30 درجة ليلا.",
    "اشتريت 3 كتب و2 دفتر و11 قلما بمبلغ 85.50 درهم.",
    "في 1 رمضان 1446هـ يبدأ الصيام، والإفطار الساعة 18:12.",
    "القرن 21 هو قرن التكنولوجيا والمعلومات.",
    "أضف ½ كوب من السكر و¼ ملعقة ملح ثم اخبز لمدة 25 دقيقة على 180°.",
    "تراوحت الأسعار بين 100 و200 جنيه، أي ما يعادل 5-10 دولارات.",
    "مرحبا بك! كيف يمكنني مساعدتك اليوم؟",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/text_frontend.json")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--vocab", help="tokenizer JSON (adds the vocabulary stage)")
    ap.add_argument("--diacritize", action="store_true")
    args = ap.parse_args()

    frontend = TextFrontend(vocab=load_vocab_charset(args.vocab) if args.vocab else None)
    for s in CORPUS:  # warm-up: regex caches, the diacritizer session if any
        frontend(s, diacritize=args.diacritize)

    per_sentence: list[float] = []
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for s in CORPUS:
            t = time.perf_counter()
            frontend(s, diacritize=args.diacritize)
            per_sentence.append(time.perf_counter() - t)
    total = time.perf_counter() - t0

    ms = sorted(x * 1000 for x in per_sentence)
    result = {
        "sentences": len(per_sentence),
        "corpus_sentences": len(CORPUS),
        "mean_chars": round(sum(map(len, CORPUS)) / len(CORPUS), 1),
        "sentences_per_s": round(len(per_sentence) / total, 1),
        "ms_per_sentence_mean": round(statistics.fmean(ms), 4),
        "ms_per_sentence_p50": round(ms[len(ms) // 2], 4),
        "ms_per_sentence_p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 4),
        "ms_per_sentence_max": round(ms[-1], 4),
        "vocab": bool(args.vocab),
        "diacritize": args.diacritize,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"text frontend: {result['sentences_per_s']} sentences/s, "
        f"{result['ms_per_sentence_mean']} ms/sentence mean (p50 {result['ms_per_sentence_p50']}, "
        f"p99 {result['ms_per_sentence_p99']}) over {result['sentences']} sentences -> {out}"
    )


if __name__ == "__main__":
    main()
