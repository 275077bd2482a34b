"""Stopword and flagged-word lists.

sailcraft takes both from BigScience, which we cannot download. These compact lists were written by hand for this
project: stopwords are the closed-class function words (articles, particles, prepositions, pronouns, conjunctions,
auxiliaries) of each language, checked against the UDHR texts in `gflanguages` so that ordinary prose clears the
thresholds in languages.py with a margin. Flagged words are short, high-precision spam, gambling and adult terms
(sailcraft's lists also carry "slot" and "wallet"). They are smaller than BigScience's lists, so the flagged-word
filter catches less than sailcraft's; extend them with `stopwords_file`/`flagged_file` in the config.

Languages without a stopword list here (id, vi, th, ms — where sailcraft disables the check — and km, my) skip the
stopword filter. Lao has one because sailcraft checks Lao stopwords (its "lo" list is a copy of its Thai list, which
cannot match Lao script; ours is Lao).
"""

from __future__ import annotations

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        a an the and or but nor so yet if then than that this these those there here what which who whom whose
        when where why how all any both each every few more most other some such no not only own same too very
        of in on at by for with about against between into through during before after above below to from up
        down out off over under again further once is are was were be been being have has had having do does did
        doing will would shall should can could may might must i me my we our you your he him his she her it its
        they them their as also just because until while without within upon everyone anyone one
    """.split()),
    # zh: ICU words; particles, pronouns, prepositions and conjunctions
    "zh": frozenset("""
        的 了 和 是 在 有 不 也 与 及 其 或 为 对 以 于 之 中 上 下 而 并 等 所 被 把 从 由 向 到 就 都 各 该 此 这
        那 他 她 它 我 你 们 他们 我们 人人 任何 一切 所有 个 着 得 地 将 已 可 能 会 应 应当 应该 者 但 因 如 则 即 又
        还 或者 以及 并且 因此 由于 对于 关于 没有 不得 均 享有 有权
    """.split()),
    "tl": frozenset("""
        ang ng mga sa na at ay si ni kay kina sila siya ako ikaw ka kami tayo kayo niya nila namin natin ninyo
        ito iyan iyon dito diyan doon may mayroon wala hindi rin din lamang lang pa ba kung para upang dahil o
        nang kaniyang kanyang kanilang kanila bawat lahat alinman sinuman anumang ukol tungkol laban
    """.split()),
    "ceb": frozenset("""
        ang sa ug mga si ni kang kay nga na ba pa usab o kon kung kay ako ikaw siya kami kita kamo sila ako niya
        nila nato namo ninyo kini kana kadto diri dinhi diha didto adunay aduna wala dili walay matag tanan
        bisan sumala alang aron tungod atong ilang iyang akong imong among
    """.split()),
    "war": frozenset("""
        an han ngan mga hin ha nga ni kan kay si ug o kon kun ako ikaw hiya kami kita kamo hira niya nira naton
        namon niyo ini iton adto dinhi didto may mayda waray diri dire kada tanan bisan para basi tungod iya ira
        aton akon imo amon
    """.split()),
    "ilo": frozenset("""
        ti dagiti iti kadagiti ken ni da ti a nga ket wenno no ta ngem met pay la laeng ako sika isu dakami
        datayo dakayo isuda na da mi tayo yo daytoy dayta daydiay ditoy dita sadiay adda awan saan haan amin
        tunggal uray para maipapan gapu kas kasla kenkuana kadakuada
    """.split()),
    "jv": frozenset("""
        lan ing ana kang sing saka marang kanggo utawa nanging uga wis ora dudu iku kuwi iki kae aku kowe dheweke
        awake kita padha kabeh saben sapa apa yen menawa amarga supaya kanthi tanpa karo ning neng nang ya mung
        bakal isih dening mring ingkang sarta punika boten saha wonten dening hak
    """.split()),
    # lo: ICU words; particles, pronouns, prepositions, conjunctions and auxiliaries (both spellings of ຫຼ/ຫລ)
    "lo": frozenset("""
        ແລະ ຂອງ ໃນ ວ່າ ທີ່ ດ້ວຍ ມີ ຈະ ອັນ ເປັນ ຄວາມ ໃດ ນັ້ນ ນີ້ ໄດ້ ໃຫ້ ຊຶ່ງ ຊື່ງ ເຊິ່ງ ຕ້ອງ ຢູ່ ທຸກ
        ການ ຕໍ່ ຢ່າງ ຖືກ ຫຼື ຫລື ກັບ ຈາກ ເພື່ອ ໂດຍ ແຕ່ ກໍ ກໍ່ ຍັງ ຖ້າ ຫາກ ເມື່ອ ແລ້ວ ອາດ ຄື ດັ່ງ
        ເຖິງ ຕາມ ສຳລັບ ສໍາລັບ ລະຫວ່າງ ກ່ຽວກັບ ເຂົາ ລາວ ເຮົາ ພວກ ຂ້ອຍ ເຈົ້າ ທ່ານ ບໍ່ ແມ່ນ ຕົນ ອື່ນ
        ທັງ ໄປ ມາ ເຫຼົ່າ ເຫລົ່າ ບາງ ຫຼາຍ ຫລາຍ ແຕ່ລະ ກ່ອນ ຫຼັງ ຫລັງ ຈົນ ຂຶ້ນ ລົງ ເພາະ ເນື່ອງຈາກ
    """.split()),
    "su": frozenset("""
        nu jeung di ka ti anu teh téh oge ogé mah kana kanu dina tina ku pikeun atawa tapi lamun upama sabab
        supaya kalawan tanpa ieu éta eta kuring anjeun manéhna maneh urang maranéhna sakabéh sakabeh unggal
        sing saha naon geus moal henteu teu bakal masih dibéré boga hak
    """.split()),
}

FLAGGED_WORDS: dict[str, frozenset[str]] = {
    # "seks" is left out: it is a substring of the legal "sekso"/"seksual" (UDHR's non-discrimination article).
    # shared across languages: spam and gambling terms that appear untranslated in web text of every language
    "_all": frozenset("slot wallet casino viagra porn xxx sbobet togel judol bokep".split()),
    # high precision only: the substring test also fires inside longer words ("sex" in "Sussex", and in UDHR's
    # "race, colour, sex"), and en allows just 0.01
    "en": frozenset("pussy fuck fucking hentai milf camgirl".split()),
    "id": frozenset("judi ngentot memek kontol bugil taruhan".split()),
    "ms": frozenset("judi lucah bogel taruhan".split()),
    "jv": frozenset("judi".split()),
    "su": frozenset("judi".split()),
    "tl": frozenset("kantot jakol sugal hubad".split()),
    "ceb": frozenset("sugal".split()),
    "war": frozenset("sugal".split()),
    "ilo": frozenset("sugal".split()),
    # vi: two-syllable terms, matched as sailcraft matches them: by its word 2-grams (augment_ngram: 2)
    "vi": frozenset(["cá độ", "đánh bạc", "khiêu dâm", "lô đề"]),
    "th": frozenset("พนัน บาคาร่า สล็อต ยูฟ่า เย็ด".split()),
    "lo": frozenset("ພະນັນ ຫວຍ".split()),
    "km": frozenset("ល្បែង ភ្នាល់ ស្លត់".split()),
    "my": frozenset("လောင်းကစား ဖဲ".split()),
    "zh": frozenset("赌博 博彩 色情 裸聊 百家乐 老虎机 六合彩 黄片".split()),
}


def stopwords_for(lang: str) -> frozenset[str] | None:
    return STOPWORDS.get(lang)


def flagged_for(lang: str) -> frozenset[str]:
    return FLAGGED_WORDS["_all"] | FLAGGED_WORDS.get(lang, frozenset())
