"""Language codes: each published format's codes mapped to mclip's, by an explicit table.

mclip names languages by lowercase ISO 639-1 codes where one exists (``de``, ``zh``, ``ja``), and
otherwise by the lowercase code the data uses (``fil``, ``quz``, Babel-ImageNet's ``acw``). A
format's code becomes mclip's by lower-casing it, unless the format's table says otherwise:

=================  =====================================
CLIP_benchmark     ``cn`` -> ``zh``, ``jp`` -> ``ja``
XTD10              ``jp`` -> ``ja``
Babel-ImageNet     upper case -> lower case (``DE`` -> ``de``, ``ZH`` -> ``zh``)
Multi30K, XM3600,  already lowercase ISO codes: unchanged
CSV, shards,
Babel retrieval
Flores-200         the explicit table :data:`FLORES_200` (``deu_Latn`` -> ``de``, ``zho_Hant`` ->
(SIB-200,          ``zh-hant``); an unknown code is kept as written (``xyz_Latn``), not
MVL-SIB)           lower-cased
=================  =====================================

A language that is not there raises :class:`~mclip.config.ConfigError` naming the language, the
file and the languages it has; nothing is guessed (asking CLIP_benchmark data for ``cn`` is an
error that says to ask for ``zh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from mclip.config import ConfigError


@dataclass(frozen=True)
class CodeTable:
    """How one format writes language codes: ``aliases`` maps the format's codes that differ from
    mclip's by more than letter case to mclip's."""
    format: str
    aliases: Mapping[str, str] = field(default_factory=dict)

    def to_mclip(self, code: str) -> str:
        """The mclip code for the format's ``code``."""
        return self.aliases.get(code, self.aliases.get(code.lower(), code.lower()))


CLIP_BENCHMARK = CodeTable("CLIP_benchmark", {"cn": "zh", "jp": "ja"})
XTD10 = CodeTable("XTD10", {"jp": "ja"})
BABEL_IMAGENET = CodeTable("Babel-ImageNet")
BABEL_RETRIEVAL = CodeTable("Babel-ImageNet retrieval")
MULTI30K = CodeTable("Multi30K")
XM3600 = CodeTable("XM3600")
CSV = CodeTable("CSV")
SHARDS = CodeTable("shards")


class LanguageIndex:
    """The languages one file (or folder) has: mclip code -> the code as the file writes it."""

    def __init__(self, codes: Iterable[str], table: CodeTable, where: str):
        self.table, self.where = table, where
        self.native: dict[str, str] = {}
        for code in codes:
            mclip = table.to_mclip(code)
            if mclip in self.native and self.native[mclip] != code:
                raise ConfigError(f"{where} has both '{self.native[mclip]}' and '{code}', which "
                                  f"are one language ('{mclip}') for mclip; keep one of them")
            self.native[mclip] = code

    def languages(self) -> list[str]:
        """The mclip codes present, sorted."""
        return sorted(self.native)

    def lookup(self, language: str) -> str:
        """The file's own code for the mclip code ``language``; ConfigError naming the language,
        the file and the languages there when it is absent."""
        if language in self.native:
            return self.native[language]
        hint = ""
        alias = self.table.aliases.get(language)
        if alias is not None:
            hint = f" ('{language}' is {self.table.format}'s code; mclip calls it '{alias}')"
        elif language.lower() in self.native:
            hint = f" (mclip codes are lowercase: use '{language.lower()}')"
        shown = ", ".join(self.languages()) or "none"
        raise ConfigError(f"language '{language}' is not in {self.where}{hint}; languages there: "
                          f"{shown}")


# --- Flores-200 (SIB-200, MVL-SIB) ---------------------------------------------------------------
#
# Flores-200 names a language by its ISO 639-3 code and script (``deu_Latn``). mclip's code is the
# ISO 639-1 code where one exists. An individual language of a macrolanguage takes the
# macrolanguage's ISO 639-1 code only where it is that language's standard written form (arb -> ar,
# pes -> fa, zsm -> ms, swh -> sw, lvs -> lv, khk -> mn, npi -> ne, ory -> or, azj -> az,
# uzn -> uz, plt -> mg, gaz -> om, als -> sq, ydd -> yi, pbt -> ps, kmr -> ku); the other varieties
# keep their ISO 639-3 code (the Arabic varieties acm, acq, aeb, ajp, apc, ars, ary, arz; prs, azb,
# ckb, ayr, quy, knc, fuv, ...). A language written in two scripts keeps the plain code for its
# usual script and gets ``-<script>`` (lowercase) for the other: zho_Hans -> zh, zho_Hant ->
# zh-hant, arb_Latn -> ar-latn, kas_Deva -> ks-deva, sat_Beng -> sat-beng, and ace / bjn / knc /
# min ``_Arab`` -> ``-arab``, taq_Tfng -> taq-tfng. Codes not in the table are kept exactly as
# written (``xyz_Latn``), and the readers report them.
FLORES_200: dict[str, str] = {
    "ace_Arab": "ace-arab", "ace_Latn": "ace", "acm_Arab": "acm", "acq_Arab": "acq",
    "aeb_Arab": "aeb", "afr_Latn": "af", "ajp_Arab": "ajp", "aka_Latn": "ak", "als_Latn": "sq",
    "amh_Ethi": "am", "apc_Arab": "apc", "arb_Arab": "ar", "arb_Latn": "ar-latn",
    "ars_Arab": "ars", "ary_Arab": "ary", "arz_Arab": "arz", "asm_Beng": "as", "ast_Latn": "ast",
    "awa_Deva": "awa", "ayr_Latn": "ayr", "azb_Arab": "azb", "azj_Latn": "az", "bak_Cyrl": "ba",
    "bam_Latn": "bm", "ban_Latn": "ban", "bel_Cyrl": "be", "bem_Latn": "bem", "ben_Beng": "bn",
    "bho_Deva": "bho", "bjn_Arab": "bjn-arab", "bjn_Latn": "bjn", "bod_Tibt": "bo",
    "bos_Latn": "bs", "bug_Latn": "bug", "bul_Cyrl": "bg", "cat_Latn": "ca", "ceb_Latn": "ceb",
    "ces_Latn": "cs", "cjk_Latn": "cjk", "ckb_Arab": "ckb", "crh_Latn": "crh", "cym_Latn": "cy",
    "dan_Latn": "da", "deu_Latn": "de", "dik_Latn": "dik", "dyu_Latn": "dyu", "dzo_Tibt": "dz",
    "ell_Grek": "el", "eng_Latn": "en", "epo_Latn": "eo", "est_Latn": "et", "eus_Latn": "eu",
    "ewe_Latn": "ee", "fao_Latn": "fo", "fij_Latn": "fj", "fin_Latn": "fi", "fon_Latn": "fon",
    "fra_Latn": "fr", "fur_Latn": "fur", "fuv_Latn": "fuv", "gaz_Latn": "om", "gla_Latn": "gd",
    "gle_Latn": "ga", "glg_Latn": "gl", "grn_Latn": "gn", "guj_Gujr": "gu", "hat_Latn": "ht",
    "hau_Latn": "ha", "heb_Hebr": "he", "hin_Deva": "hi", "hne_Deva": "hne", "hrv_Latn": "hr",
    "hun_Latn": "hu", "hye_Armn": "hy", "ibo_Latn": "ig", "ilo_Latn": "ilo", "ind_Latn": "id",
    "isl_Latn": "is", "ita_Latn": "it", "jav_Latn": "jv", "jpn_Jpan": "ja", "kab_Latn": "kab",
    "kac_Latn": "kac", "kam_Latn": "kam", "kan_Knda": "kn", "kas_Arab": "ks",
    "kas_Deva": "ks-deva", "kat_Geor": "ka", "kaz_Cyrl": "kk", "kbp_Latn": "kbp",
    "kea_Latn": "kea", "khk_Cyrl": "mn", "khm_Khmr": "km", "kik_Latn": "ki", "kin_Latn": "rw",
    "kir_Cyrl": "ky", "kmb_Latn": "kmb", "kmr_Latn": "ku", "knc_Arab": "knc-arab",
    "knc_Latn": "knc", "kon_Latn": "kg", "kor_Hang": "ko", "lao_Laoo": "lo", "lij_Latn": "lij",
    "lim_Latn": "li", "lin_Latn": "ln", "lit_Latn": "lt", "lmo_Latn": "lmo", "ltg_Latn": "ltg",
    "ltz_Latn": "lb", "lua_Latn": "lua", "lug_Latn": "lg", "luo_Latn": "luo", "lus_Latn": "lus",
    "lvs_Latn": "lv", "mag_Deva": "mag", "mai_Deva": "mai", "mal_Mlym": "ml", "mar_Deva": "mr",
    "min_Arab": "min-arab", "min_Latn": "min", "mkd_Cyrl": "mk", "mlt_Latn": "mt",
    "mni_Beng": "mni", "mos_Latn": "mos", "mri_Latn": "mi", "mya_Mymr": "my", "nld_Latn": "nl",
    "nno_Latn": "nn", "nob_Latn": "nb", "npi_Deva": "ne", "nqo_Nkoo": "nqo", "nso_Latn": "nso",
    "nus_Latn": "nus", "nya_Latn": "ny", "oci_Latn": "oc", "ory_Orya": "or", "pag_Latn": "pag",
    "pan_Guru": "pa", "pap_Latn": "pap", "pbt_Arab": "ps", "pes_Arab": "fa", "plt_Latn": "mg",
    "pol_Latn": "pl", "por_Latn": "pt", "prs_Arab": "prs", "quy_Latn": "quy", "ron_Latn": "ro",
    "run_Latn": "rn", "rus_Cyrl": "ru", "sag_Latn": "sg", "san_Deva": "sa",
    "sat_Beng": "sat-beng", "sat_Olck": "sat", "scn_Latn": "scn", "shn_Mymr": "shn",
    "sin_Sinh": "si", "slk_Latn": "sk", "slv_Latn": "sl", "smo_Latn": "sm", "sna_Latn": "sn",
    "snd_Arab": "sd", "som_Latn": "so", "sot_Latn": "st", "spa_Latn": "es", "srd_Latn": "sc",
    "srp_Cyrl": "sr", "ssw_Latn": "ss", "sun_Latn": "su", "swe_Latn": "sv", "swh_Latn": "sw",
    "szl_Latn": "szl", "tam_Taml": "ta", "taq_Latn": "taq", "taq_Tfng": "taq-tfng",
    "tat_Cyrl": "tt", "tel_Telu": "te", "tgk_Cyrl": "tg", "tgl_Latn": "tl", "tha_Thai": "th",
    "tir_Ethi": "ti", "tpi_Latn": "tpi", "tsn_Latn": "tn", "tso_Latn": "ts", "tuk_Latn": "tk",
    "tum_Latn": "tum", "tur_Latn": "tr", "twi_Latn": "tw", "tzm_Tfng": "tzm", "uig_Arab": "ug",
    "ukr_Cyrl": "uk", "umb_Latn": "umb", "urd_Arab": "ur", "uzn_Latn": "uz", "vec_Latn": "vec",
    "vie_Latn": "vi", "war_Latn": "war", "wol_Latn": "wo", "xho_Latn": "xh", "ydd_Hebr": "yi",
    "yor_Latn": "yo", "yue_Hant": "yue", "zho_Hans": "zh", "zho_Hant": "zh-hant",
    "zsm_Latn": "ms", "zul_Latn": "zu",
}


@dataclass(frozen=True)
class FloresTable(CodeTable):
    """Flores-200 codes: mapped by :data:`FLORES_200` (letter case of the code as published, or
    any case); a code not in the table is kept exactly as written, never guessed."""

    def to_mclip(self, code: str) -> str:
        """The mclip code for the Flores-200 ``code``, or ``code`` itself when it is unknown."""
        if code in self.aliases:
            return self.aliases[code]
        return _FLORES_LOWER.get(code.lower(), code)

    def knows(self, code: str) -> bool:
        """True when ``code`` is in the table (in any letter case)."""
        return code in self.aliases or code.lower() in _FLORES_LOWER


_FLORES_LOWER = {code.lower(): mclip for code, mclip in FLORES_200.items()}
FLORES = FloresTable("Flores-200", FLORES_200)
