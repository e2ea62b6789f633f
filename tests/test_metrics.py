import pytest
import torch
import torch.nn.functional as F

from mclip.eval.ranking import tie_free_scores
from mclip.eval.retrieval import retrieval_metrics, retrieval_ranks
from mclip.eval.zeroshot import build_classifier, evaluate_language, fill_template, zeroshot_metrics


def test_tie_free_scores_prefer_lower_index():
    scores = tie_free_scores(torch.tensor([[0.5, 0.9, 0.9, 0.1]]))
    assert scores.argmax().item() == 1
    assert torch.topk(scores, 2).indices.tolist() == [[1, 2]]


def test_zeroshot_metrics_by_hand():
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # label 0: top1 hit
            [0.2, 0.7, 0.1],  # label 2: ranked last, miss at 1 and 2
            [0.3, 0.3, 0.3],  # label 1: tie of three -> predicted 0 (miss)
            [0.1, 0.5, 0.5],
        ]
    )  # label 2: tie 1 vs 2 -> predicted 1 (miss)
    labels = torch.tensor([0, 2, 1, 2])
    m = zeroshot_metrics(logits, labels, top_k=(1, 2))
    assert m["acc@1"] == pytest.approx(1 / 4)
    assert m["acc@2"] == pytest.approx(3 / 4)  # rows 0, 2 (tie order 0,1,2 puts 1 second), 3
    # recall per class present: class 0 -> 1/1, class 1 -> 0/1, class 2 -> 0/2
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0 + 0) / 3)


def test_ties_make_acc1_and_recall_agree_on_balanced_data():
    """With duplicate classes, argmax and topk could disagree; mclip's rule makes them agree."""
    logits = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    m = zeroshot_metrics(logits, labels, top_k=(1,))
    assert m["acc@1"] == pytest.approx(3 / 4)
    assert m["mean_per_class_recall"] == pytest.approx((2 / 2 + 1 / 2) / 2)


def test_acc_at_k_not_applicable_when_fewer_classes():
    m = zeroshot_metrics(torch.tensor([[0.1, 0.2], [0.3, 0.1]]), torch.tensor([0, 0]), top_k=(1, 5))
    assert m["acc@5"] is None and m["acc@1"] == 0.5


def test_fill_template_formats():
    assert fill_template("a photo of {c}.", "a cat") == "a photo of a cat."
    assert fill_template("una foto di {}.", "gatto") == "una foto di gatto."
    assert fill_template("", "Katze") == "Katze"


def _fake_text_encoder(dim=8):
    def encode(texts):
        out = []
        for text in texts:
            g = torch.Generator().manual_seed(sum(text.encode()) % (2**31))
            out.append(torch.randn(dim, generator=g))
        return F.normalize(torch.stack(out), dim=-1)

    return encode


def test_classifier_is_normalised_mean_of_normalised_templates():
    encode = _fake_text_encoder()
    classifier = build_classifier(encode, ["cat", "dog"], ["a {c}", "the {c}"])
    expected = F.normalize(encode(["a cat", "the cat"]).mean(0), dim=0)
    assert torch.allclose(classifier[0], expected, atol=1e-6)


def test_duplicate_names_get_identical_rows_and_ties_go_to_lower_index():
    encode = _fake_text_encoder()
    classifier = build_classifier(encode, ["missile", "tank", "missile"], ["{c}"])
    assert torch.equal(classifier[0], classifier[2])
    images = classifier[[2, 0]]  # images that look exactly like "missile"
    m = evaluate_language(
        images, torch.tensor([0, 2]), encode, ["missile", "tank", "missile"], ["{c}"], top_k=(1,)
    )
    assert m["acc@1"] == pytest.approx(0.5)  # both predicted class 0


def test_missing_translations_remove_classes_and_their_images():
    encode = _fake_text_encoder()
    names = ["cat", None, "dog", ""]
    classifier = build_classifier(encode, ["cat", "dog"], ["{c}"])
    images = torch.cat([classifier, classifier[:1]])  # cat, dog, cat
    labels = torch.tensor([0, 2, 1])  # the third image's class is missing
    m = evaluate_language(images, labels, encode, names, ["{c}"], top_k=(1,))
    assert m["n_classes"] == 2 and m["n_images"] == 2 and m["acc@1"] == 1.0


def _naive_ranks(image, text, owner):
    sims = image @ text.T
    t2i = []
    for j in range(text.shape[0]):
        order = sorted(range(image.shape[0]), key=lambda i: (-sims[i, j].item(), i))
        t2i.append(order.index(owner[j].item()))
    i2t = []
    for i in range(image.shape[0]):
        order = sorted(range(text.shape[0]), key=lambda j: (-sims[i, j].item(), j))
        positions = [order.index(j) for j in range(text.shape[0]) if owner[j] == i]
        # rank = number of negatives ahead of the best positive
        i2t.append(min(positions) if positions else -1)
    return torch.tensor(t2i), torch.tensor(i2t)


def test_retrieval_by_hand_several_captions_per_image():
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 0.2, 1], [0, 1, 0], [0, 1, 0.1], [0, 0.5, 1.0]])
    owner = torch.tensor([0, 1, 1, 1, 2])  # image 1 has three captions
    m = retrieval_metrics(image, text, owner, ks=(1, 2))
    # t2i: caption0 -> img0 hit; caption1 best is img2 (miss@1, hit@2); caption2 hit; caption3 hit;
    # caption4 -> img2 hit
    assert m["text_to_image_R@1"] == pytest.approx(4 / 5)
    assert m["text_to_image_R@2"] == pytest.approx(1.0)
    # i2t: img0 -> caption0 first (hit); img1 -> captions 2/3 score 1 (hit);
    # img2 -> caption1 (score 1, index 1 < 4) ranks first but is image 1's: miss@1, hit@2
    assert m["image_to_text_R@1"] == pytest.approx(2 / 3)
    assert m["image_to_text_R@2"] == pytest.approx(1.0)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_ranks_match_naive_with_ties(chunk):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(-2, 3, (9, 4), generator=g).float()  # small integers: many exact ties
    text = torch.randint(-2, 3, (20, 4), generator=g).float()
    owner = torch.randint(0, 8, (20,), generator=g)  # image 8 may have no caption
    t2i, i2t = retrieval_ranks(image, text, owner, chunk=chunk)
    naive_t2i, naive_i2t = _naive_ranks(image, text, owner)
    assert torch.equal(t2i, naive_t2i)
    # naive i2t position counts other positives ahead too; none can be ahead of the best one
    assert torch.equal(i2t, naive_i2t)


# --- mean per-class recall: CLIP_benchmark's balanced accuracy -----------------------------------


def _one_hot_logits(predicted, n_classes):
    return F.one_hot(torch.tensor(predicted), n_classes).float()


def test_mean_per_class_recall_ignores_classes_absent_from_labels_by_hand():
    # class 0: 2/2, class 1: 1/2, class 2 has no image but is predicted once -> not averaged
    logits = _one_hot_logits([0, 0, 1, 2], 3)
    m = zeroshot_metrics(logits, torch.tensor([0, 0, 1, 1]), top_k=(1,))
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0.5) / 2)


def test_mean_per_class_recall_matches_sklearn_balanced_accuracy_with_absent_class():
    metrics = pytest.importorskip("sklearn.metrics")
    labels = torch.tensor([0, 0, 1, 1])
    predicted = [0, 0, 1, 2]
    m = zeroshot_metrics(_one_hot_logits(predicted, 3), labels, top_k=(1,))
    with pytest.warns(UserWarning):  # sklearn: "y_pred contains classes not in y_true"
        expected = metrics.balanced_accuracy_score(labels.numpy(), predicted)
    assert expected == pytest.approx(0.75)
    assert m["mean_per_class_recall"] == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_mean_per_class_recall_matches_sklearn_balanced_accuracy_random(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    import warnings

    g = torch.Generator().manual_seed(seed)
    n_classes = 12
    labels = torch.randint(0, 8, (60,), generator=g)  # classes 8..11 have no image
    logits = torch.randint(0, 4, (60, n_classes), generator=g).float()  # many exact ties
    m = zeroshot_metrics(logits, labels, top_k=(1,))
    predicted = tie_free_scores(logits).argmax(1)  # ties go to the lower index
    assert torch.equal(
        predicted, torch.tensor([row.tolist().index(max(row.tolist())) for row in logits])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = metrics.balanced_accuracy_score(labels.numpy(), predicted.numpy())
    assert m["mean_per_class_recall"] == pytest.approx(expected, abs=1e-6)


# --- retrieval ranks with exact duplicates -------------------------------------------------------


def _duplicated_retrieval_inputs(seed, n_images=24, n_texts=48, d=48):
    """Normalised embeddings where many images and many captions are exact copies of others,
    and the full score matrix, built so that equal embeddings get bit-identical scores."""
    g = torch.Generator().manual_seed(seed)
    distinct_images = F.normalize(torch.randn(n_images // 3, d, generator=g), dim=-1)
    distinct_texts = torch.cat(
        [F.normalize(torch.randn(n_texts // 3, d, generator=g), dim=-1), distinct_images]
    )  # some captions equal an image embedding
    image_ids = torch.randint(0, len(distinct_images), (n_images,), generator=g)
    text_ids = torch.randint(0, len(distinct_texts), (n_texts,), generator=g)
    owner = torch.randint(0, n_images - 1, (n_texts,), generator=g)  # the last image: no caption
    sims = (distinct_images @ distinct_texts.T)[image_ids][:, text_ids]  # one matmul, gathered
    return distinct_images[image_ids], distinct_texts[text_ids], owner, sims


def _brute_force_ranks(sims, owner):
    """Ranks by sorting rows and columns of the full score matrix (score desc, index asc)."""
    sims, owner = sims.tolist(), owner.tolist()
    t2i = [
        sorted(range(len(sims)), key=lambda i: (-sims[i][j], i)).index(owner[j])
        for j in range(len(owner))
    ]
    i2t = []
    for i, row in enumerate(sims):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        positions = [p for p, j in enumerate(order) if owner[j] == i]
        i2t.append(positions[0] if positions else -1)  # negatives ahead of the best positive
    return torch.tensor(t2i), torch.tensor(i2t)


@pytest.mark.parametrize("chunk", [5, 2048])
def test_retrieval_ranks_with_duplicated_images_and_captions_match_full_matrix(chunk):
    """The positive's score and its duplicates' scores must be the very same float."""
    wrong = 0
    for seed in range(200):
        shape = dict(n_images=6 + seed % 29, n_texts=9 + seed % 53)  # BLAS paths vary by shape
        image, text, owner, sims = _duplicated_retrieval_inputs(seed, **shape)
        t2i, i2t = retrieval_ranks(image, text, owner, chunk=chunk)
        naive_t2i, naive_i2t = _brute_force_ranks(sims, owner)
        wrong += not (torch.equal(t2i, naive_t2i) and torch.equal(i2t, naive_i2t))
    assert wrong == 0, f"{wrong} of 200 trials ranked differently from the full score matrix"


# --- chunked retrieval against the full score matrix, at sizes with many tiles -----------------


def _tied_retrieval_inputs(seed, n_images=150, d=24):
    """Random normalised embeddings with every kind of tie: exact duplicate images (each with
    its own captions), a caption repeated for its own image and for other images, captions equal
    to an image embedding, images without captions, 0 to 6 captions per image (shuffled order).
    Returns image [N, d], text [M, d], owner [M] and the full score matrix [N, M], made with one
    product over distinct rows so that equal embeddings score bit-identically."""
    g = torch.Generator().manual_seed(seed)
    distinct_images = F.normalize(torch.randn(n_images * 2 // 3, d, generator=g), dim=-1)
    n_copies = n_images - len(distinct_images)
    image_ids = torch.cat(
        [
            torch.arange(len(distinct_images)),
            torch.randint(0, len(distinct_images), (n_copies,), generator=g),
        ]
    )
    image_ids = image_ids[torch.randperm(n_images, generator=g)]
    per_image = torch.randint(0, 7, (n_images,), generator=g)  # some images: no caption
    owner = torch.repeat_interleave(torch.arange(n_images), per_image)
    owner = owner[torch.randperm(len(owner), generator=g)]
    n_texts = len(owner)
    distinct_texts = torch.cat(
        [F.normalize(torch.randn(n_texts, d, generator=g), dim=-1), distinct_images]
    )
    text_ids = torch.arange(n_texts)
    copy_from = torch.randint(0, n_texts, (n_texts // 5,), generator=g)  # captions repeated
    text_ids[torch.randint(0, n_texts, (n_texts // 5,), generator=g)] = copy_from
    as_image = torch.randint(0, n_texts, (n_texts // 20,), generator=g)  # caption == an image
    text_ids[as_image] = n_texts + image_ids[owner[as_image]]
    sims = (distinct_images @ distinct_texts.T)[image_ids][:, text_ids]
    return distinct_images[image_ids], distinct_texts[text_ids], owner, sims


def _full_matrix_ranks(sims, owner):
    """Ranks from the whole score matrix [N, M], vectorised: negatives (masked explicitly) that
    score higher, or the same with a lower index."""
    n_images, n_texts = sims.shape
    image_index, text_index = torch.arange(n_images)[:, None], torch.arange(n_texts)[None, :]
    is_positive = owner[None, :] == image_index
    positive = sims[owner, torch.arange(n_texts)]
    t2i = (
        ((sims > positive) | ((sims == positive) & (image_index < owner[None, :]))) & ~is_positive
    ).sum(0)
    best = torch.where(is_positive, sims, -torch.inf).max(1).values[:, None]
    best_index = torch.where(is_positive & (sims == best), text_index, n_texts).min(1).values
    i2t = (
        ((sims > best) | ((sims == best) & (text_index < best_index[:, None]))) & ~is_positive
    ).sum(1)
    i2t[~is_positive.any(1)] = -1
    return t2i, i2t


@pytest.mark.parametrize("seed", range(3))
def test_chunked_retrieval_equals_full_matrix_on_random_data_with_ties(seed):
    image, text, owner, sims = _tied_retrieval_inputs(seed)
    expected = _full_matrix_ranks(sims, owner)
    assert (expected[1] == -1).any() and (expected[0] == 0).any()  # the data has both cases
    n_images, n_texts = sims.shape
    for chunk in (7, 32, 100, 4096):  # smaller than N and M, between them, larger than both
        t2i, i2t = retrieval_ranks(image, text, owner, chunk=chunk)
        assert torch.equal(t2i, expected[0]), f"text->image ranks differ at chunk={chunk}"
        assert torch.equal(i2t, expected[1]), f"image->text ranks differ at chunk={chunk}"
    metrics = retrieval_metrics(image, text, owner, ks=(1, 5), chunk=32)
    assert metrics["text_to_image_R@5"] == pytest.approx((expected[0] < 5).float().mean().item())
    captioned = expected[1][expected[1] >= 0]
    assert metrics["image_to_text_R@1"] == pytest.approx((captioned < 1).float().mean().item())


def test_retrieval_look_alike_rows_stay_apart_and_signed_zeros_merge():
    """Rows that agree on their leading coordinates (what duplicate detection hashes) but differ
    later are distinct; rows equal everywhere, +0.0 against -0.0 included, are one row."""
    g = torch.Generator().manual_seed(0)
    distinct = torch.randn(5, 80, generator=g)
    distinct[:, :64] = distinct[0, :64].clone()  # five look-alikes
    distinct[:, 70] = 0.0
    image_ids = torch.tensor([0, 1, 2, 1, 3, 4, 2])  # images 1 = 3 and 2 = 6
    text_ids = torch.tensor([0, 1, 2, 3, 4, 1, 0, 2, 2])
    image, text = distinct[image_ids].clone(), distinct[text_ids].clone()
    image[6, 70], text[8, 70] = -0.0, -0.0
    owner = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 1])
    sims = (distinct @ distinct.T)[image_ids][:, text_ids]
    expected = _full_matrix_ranks(sims, owner)
    for chunk in (2, 3, 100):
        t2i, i2t = retrieval_ranks(image, text, owner, chunk=chunk)
        assert torch.equal(t2i, expected[0]) and torch.equal(i2t, expected[1]), chunk


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(text_to_image=torch.tensor([0, 5])), "outside"),
        (dict(text_to_image=torch.tensor([0])), "one image index per text"),
        (dict(text_emb=torch.ones(2, 3)), "dim"),
        (dict(chunk=0), "chunk"),
    ],
)
def test_retrieval_rejects_bad_inputs_naming_them(bad, message):
    args = dict(
        image_emb=torch.eye(4),
        text_emb=torch.eye(4)[:2],
        text_to_image=torch.tensor([0, 1]),
        chunk=16,
    )
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        retrieval_ranks(**args)
