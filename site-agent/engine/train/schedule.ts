// Learning-rate schedule: linear warm-up then cosine decay to `minLrRatio`·lr, the shape of
// transformers' get_cosine_schedule_with_warmup (which decays to 0). `step` is the 0-based
// index of the optimizer step, i.e. the value of scheduler.last_epoch when optimizer.step()
// runs in a HF Trainer loop; so with warm-up the very first step has lr 0, as in HF.

export interface ScheduleOptions {
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** 'cosine' (default) or 'constant' (after warm-up). */
  kind?: 'cosine' | 'constant';
  minLrRatio?: number;
}

export function lrAt(step: number, o: ScheduleOptions): number {
  const warm = Math.max(0, Math.floor(o.warmupSteps));
  if (step < warm) return (o.lr * step) / Math.max(1, warm);
  if (o.kind === 'constant') return o.lr;
  const minR = o.minLrRatio ?? 0;
  const progress = (step - warm) / Math.max(1, o.totalSteps - warm);
  const cos = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
  return o.lr * (minR + (1 - minR) * cos);
}
