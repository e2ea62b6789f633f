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
    logits = torch.tensor([[0.9, 0.1, 0.0],    # label 0: top1 hit
                           [0.2, 0.7, 0.1],    # label 2: ranked last, miss at 1 and 2
                           [0.3, 0.3, 0.3],    # label 1: tie of three -> predicted 0 (miss)
                           [0.1, 0.5, 0.5]])   # label 2: tie 1 vs 2 -> predicted 1 (miss)
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


def test_acc_at_k_clamped_when_fewer_classes():
    m = zeroshot_metrics(torch.tensor([[0.1, 0.2], [0.3, 0.1]]), torch.tensor([0, 0]), top_k=(1, 5))
    assert m["acc@5"] == 1.0 and m["acc@1"] == 0.5


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
    m = evaluate_language(images, torch.tensor([0, 2]), encode, ["missile", "tank", "missile"],
                          ["{c}"], top_k=(1,))
    assert m["acc@1"] == pytest.approx(0.5)  # both predicted class 0


def test_missing_translations_remove_classes_and_their_images():
    encode = _fake_text_encoder()
    names = ["cat", None, "dog", ""]
    classifier = build_classifier(encode, ["cat", "dog"], ["{c}"])
    images = torch.cat([classifier, classifier[:1]])          # cat, dog, cat
    labels = torch.tensor([0, 2, 1])                         # the third image's class is missing
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
