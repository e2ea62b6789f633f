"""Readers for the evaluation data formats users have, one module per format.

Every reader yields the task objects of :mod:`mclip.eval.datasets.base`:

* classification images -> an :class:`ImageSet` of :class:`ImageItem` with labels
  (:class:`ImageFolderSet`, :class:`LabelledShardSet`);
* class texts -> a :class:`ClassTextSource` whose ``load(language, dataset)`` gives
  :class:`ClassTexts` (:class:`ClipBenchmarkTexts`, :class:`BabelImageNetTexts`);
* retrieval -> a :class:`RetrievalSet` (an ImageSet with ``languages()`` and
  ``captions(language) -> Captions``): :class:`Multi30kTask1`, :class:`Multi30kTask2`,
  :class:`XTD10Set`, :class:`XM3600Set`, :class:`BabelRetrievalSet`, :class:`CsvCaptionSet`,
  :class:`CaptionShardSet`;
* topic matching -> a :class:`TopicSet` (an ImageSet of topic images with ``languages()`` and
  ``sentences(language) -> TopicSentences``): :class:`MvlSibTopics`, :class:`TsvTopics`.

:func:`open_class_texts`, :func:`open_image_set`, :func:`open_retrieval` and :func:`open_topics`
pick the reader from what a path holds. Languages are mclip codes (lowercase ISO 639-1), mapped from
each format's own codes by explicit tables (:mod:`mclip.eval.datasets.codes`). Empty captions are
dropped and counted in ``Captions.skipped["empty_caption"]``.
"""

from .babel_imagenet import BabelImageNetTexts
from .babel_retrieval import BabelRetrievalSet
from .base import (
    Captions,
    ClassTexts,
    ClassTextSource,
    ImageItem,
    ImageSet,
    RetrievalSet,
    file_fingerprint,
)
from .caption_shards import CaptionShardSet
from .clip_benchmark import ClipBenchmarkTexts
from .csv_captions import CsvCaptionSet
from .detect import open_class_texts, open_image_set, open_retrieval
from .imagefolder import ImageFolderSet
from .labelled_shards import LabelledShardSet
from .multi30k import Multi30kTask1, Multi30kTask2, open_multi30k
from .topics import MvlSibTopics, TopicSentences, TopicSet, TsvTopics, open_topics
from .xm3600 import XM3600Set
from .xtd10 import XTD10Set

__all__ = [
    "BabelImageNetTexts",
    "BabelRetrievalSet",
    "CaptionShardSet",
    "Captions",
    "ClassTextSource",
    "ClassTexts",
    "ClipBenchmarkTexts",
    "CsvCaptionSet",
    "ImageFolderSet",
    "ImageItem",
    "ImageSet",
    "LabelledShardSet",
    "Multi30kTask1",
    "Multi30kTask2",
    "MvlSibTopics",
    "RetrievalSet",
    "TopicSentences",
    "TopicSet",
    "TsvTopics",
    "XM3600Set",
    "XTD10Set",
    "file_fingerprint",
    "open_class_texts",
    "open_image_set",
    "open_multi30k",
    "open_retrieval",
    "open_topics",
]
