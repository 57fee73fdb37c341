# Independent reference for the site's evaluation figures (test/eval/*.test.ts): the bootstrap
# draws re-implemented from their documented definition (sha256-seeded xoshiro128**, rejection
# sampling of item indices), the statistics and percentiles computed with numpy.
# stdin: JSON {seed, label, B, values, gold, pred, probs, answer, chosen}; stdout: JSON.
import hashlib, json, struct, sys
import numpy as np

M = 0xFFFFFFFF

def rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & M

class Xoshiro:
    def __init__(self, seed, *labels):
        h = hashlib.sha256(json.dumps([seed, *labels], separators=(',', ':'), ensure_ascii=False).encode()).digest()
        self.s = list(struct.unpack('<4I', h[:16]))
        if all(w == 0 for w in self.s):
            self.s[0] = 0x9E3779B9

    def next_u32(self):
        s = self.s
        result = (rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 9) & M
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
        s[3] = rotl(s[3], 11)
        return result

    def next_int(self, n):
        limit = (0x100000000 // n) * n
        while True:
            x = self.next_u32()
            if x < limit:
                return x % n

def resamples(n, B, seed, label):
    rng = Xoshiro(seed, 'bootstrap', label)
    return [np.array([rng.next_int(n) for _ in range(n)]) for _ in range(B)]

def interval(reps):
    reps = np.asarray(reps, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    return [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]

def class_table(gold, pred):
    labels = sorted(set(gold) | set(pred))
    g = np.array([labels.index(x) for x in gold]); p = np.array([labels.index(x) for x in pred])
    K = len(labels)
    cm = np.zeros((K, K))
    np.add.at(cm, (g, p), 1)
    tp = np.diag(cm); sup = cm.sum(1); predn = cm.sum(0); n = cm.sum()
    fp = predn - tp; fn = sup - tp; tn = n - sup - fp
    with np.errstate(divide='ignore', invalid='ignore'):
        prec = np.where(predn > 0, tp / predn, 0.0)
        rec = np.where(sup > 0, tp / sup, 0.0)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    out = {'labels': labels, 'support': sup.tolist(), 'confusion': cm.tolist()}
    for name, v in [('precision', prec), ('recall', rec), ('specificity', spec), ('f1', f1)]:
        ok = np.isfinite(v)
        out[name] = v.tolist()
        out['macro_' + name] = float(v[ok].mean())
        out['weighted_' + name] = float((v[ok] * sup[ok]).sum() / sup[ok].sum())
    return out

def calibration(probs, answer, chosen):
    probs = np.asarray(probs); answer = np.asarray(answer); chosen = np.asarray(chosen)
    conf = probs[np.arange(len(probs)), chosen]
    acc = (chosen == answer).astype(float)
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(acc[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() for b in range(10) if (bins == b).any()) / len(conf)
    onehot = np.eye(probs.shape[1])[answer]
    brier = float(((probs - onehot) ** 2).sum(1).mean())
    return float(ece), brier

q = json.load(sys.stdin)
out = {}
B, seed, label = q['B'], q['seed'], q['label']
if 'values' in q:
    v = np.asarray(q['values'], dtype=np.float64)
    out['mean'] = float(v.mean())
    out['mean_ci'] = interval([v[ix].mean() for ix in resamples(len(v), B, seed, label)])
    out['p50_ci'] = interval([np.percentile(v[ix], 50) for ix in resamples(len(v), B, seed, label)])
if 'gold' in q:
    gold, pred = q['gold'], q['pred']
    t = class_table(gold, pred)
    out['table'] = t
    g = np.array(gold, dtype=object); p = np.array(pred, dtype=object)
    reps = resamples(len(gold), B, seed, label)
    out['accuracy'] = float((g == p).mean())
    out['accuracy_ci'] = interval([(g[ix] == p[ix]).mean() for ix in reps])
    out['macro_f1_ci'] = interval([class_table(list(g[ix]), list(p[ix]))['macro_f1'] for ix in reps])
    out['weighted_recall_ci'] = interval([class_table(list(g[ix]), list(p[ix]))['weighted_recall'] for ix in reps])
    # recall of the first label, per resample (undefined when no case of it is drawn)
    first = t['labels'][0]
    r = []
    for ix in reps:
        m = g[ix] == first
        r.append((p[ix][m] == first).mean() if m.any() else np.nan)
    out['recall_first_ci'] = interval(r)
    out['ece'], out['brier'] = calibration(q['probs'], q['answer'], q['chosen'])
json.dump(out, sys.stdout)
