"""Golden ids from the official `MTLTokenizer` for a table of sentences (reference env).

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/tokenizer.py --out tests/golden/tokenizer.safetensors

No random weights here: the real vocabulary (the copy in src/nutq/assets/) is the fixture. `--size`/`--seed` are accepted for the common CLI and ignored.

The official constructor tries to fetch `Cangjie5_TC.json` next to the vocabulary (hub cache
dir = the vocabulary's folder), so the vocabulary is copied into a temporary folder first to keep
the source tree untouched. Chinese and Japanese need pkuseg/Cangjie/pykakasi, which nutq does not
reproduce, so the table has no zh/ja sentences (see nutq.text.tokenizer's docstring).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from common import VOCAB, parser, save

# This folder also holds scripts named like packages (s3tokenizer.py); keep them from
# shadowing the real packages the official code imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# (language, text). Arabic first: the cases the product lives on.
SENTENCES: list[tuple[str, str]] = [
    ("ar", "مرحبا بكم في نطق"),
    ("ar", "ذهب الولد إلى المدرسة صباحا"),
    ("ar", "ذَهَبَ الوَلَدُ إِلَى المَدْرَسَةِ صَبَاحًا"),  # full harakat incl. tanween, sukun
    ("ar", "إنَّ اللهَ مَعَ الصّابرين"),  # shadda combinations
    ("ar", "أحمد وإبراهيم وآمنة"),  # hamza on/under alef, madda
    ("ar", "سُؤال، مسؤول، بئر، شيء، قرأ، هيئة"),  # ؤ ئ ء and the Arabic comma
    ("ar", "كم عمرك؟ عمري ٢٥ سنة؛ وأخي ١٣٠"),  # Arabic-Indic digits, ؟ ؛
    ("ar", "الرقم 2024 والسعر 15.5 دولار"),  # European digits
    ("ar", "أنا أعمل في Google منذ 2019"),  # mixed Arabic/English
    ("ar", "هذا هو الـ API الجديد يا Ahmed!"),
    ("ar", "قالت: «مرحبا» ثم ذهبت..."),  # guillemets and ellipsis
    ("ar", "مدرسة، مكتبة، فتاة"),  # taa marbuta
    ("ar", "على، إلى، مستشفى"),  # alef maqsura
    ("ar", "هٰذا ذٰلك الرّحمٰن"),  # superscript (dagger) alef
    ("ar", "جمـــيل جداً"),  # tatweel
    ("ar", "ﻻ ﻷ ﷲ"),  # presentation-form ligatures: NFKD expands them
    ("ar", "  مسافات   متعددة  "),  # repeated / leading / trailing spaces
    ("ar", "سطر أول\nسطر ثان\tمع تاب"),  # whitespace the pre-tokenizer drops
    ("ar", "پیام گرم چای"),  # Persian letters
    ("ar", "😀 مرحبا ✨"),  # emoji: [UNK]
    ("ar", "[laughter] هههه"),  # paralinguistic tag typed in the text
    ("ar", "HELLO يا صديقي"),  # uppercase Latin is lowercased
    ("ar", "٠١٢٣٤٥٦٧٨٩"),
    ("ar", "ما شاء الله! كيف حالك؟"),
    ("ar", "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ"),
    ("ar", "السلام عليكم ورحمة الله وبركاته"),
    ("ar", ""),  # empty: only the tag
    ("ar", "😀😀"),  # only unknown characters
    ("en", "Hello world, this is a test of the tokenizer."),
    ("en", "Dr. Smith's café costs $4.50 — isn't that nice?"),
    ("fr", "Bonjour, ça va? L'été est là, à Noël."),
    ("de", "Grüß Gott! Straße, Mädchen und Übermut."),
    ("es", "¿Dónde está el niño? ¡Mañana!"),
    ("it", "Perché no? È già tardi."),
    ("pt", "Não sei, coração; você está aí?"),
    ("nl", "Het weer is mooi vandaag in Utrecht."),
    ("pl", "Zażółć gęślą jaźń."),
    ("tr", "İstanbul'da ılık bir gün, ŞEKER ve ĞÜÇ."),  # Turkish dotted/dotless i lowercase
    ("sv", "Hej på dig, hur mår du?"),
    ("da", "Rødgrød med fløde."),
    ("no", "Blåbærsyltetøy er godt."),
    ("fi", "Hyvää päivää, mitä kuuluu?"),
    ("el", "ΟΔΟΣ Καλημέρα σας, τι κάνετε;"),  # final sigma, tonos
    ("ru", "Привет, как дела? Ёлка."),
    ("he", "שלום עולם, מה שלומך?"),
    ("hi", "नमस्ते, आप कैसे हैं?"),
    ("sw", "Habari yako? Nzuri sana."),
    ("ms", "Selamat pagi, apa khabar?"),
    ("ko", "  안녕하세요, 반갑습니다!  "),  # Korean: NFKD jamo + strip
    ("ko", "한국어 테스트"),
]


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=Path, default=VOCAB)
    args = ap.parse_args()

    import torch
    from chatterbox.models.tokenizers.tokenizer import MTLTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / args.vocab.name
        shutil.copy(args.vocab, vocab)
        tok = MTLTokenizer(str(vocab))
        tensors, decoded = {}, []
        for i, (lang, text) in enumerate(SENTENCES):
            ids = tok.encode(text, language_id=lang)
            tensors[f"out.ids.{i}"] = torch.tensor(ids, dtype=torch.int64)
            decoded.append(tok.decode(ids))

    meta = {
        "vocab": args.vocab.name,
        "languages": [lang for lang, _ in SENTENCES],
        "sentences": [text for _, text in SENTENCES],
        "decoded": decoded,
    }
    save(args.out, tensors, meta)


if __name__ == "__main__":
    main()
