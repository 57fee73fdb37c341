// Drives a whole secure-aggregation round through the stage functions, with simulated dropouts.
import {
  advertiseKeys, aggregateMasked, collectAdvertise, maskInput, routeShares, shareKeys, unmask, unmaskShares,
  type SecAggConfig, type SiteSecAggState,
} from '../../shared/secagg/protocol.ts';

export interface Sim { dropBeforeShare?: string[]; dropBeforeMask?: string[]; dropBeforeUnmask?: string[] }

export function runRound(inputs: Map<string, Float32Array>, cfg: SecAggConfig, sim: Sim = {}) {
  const states = new Map<string, SiteSecAggState>();
  const adv = [...inputs.keys()].map((id) => { const r = advertiseKeys(id, cfg); states.set(id, r.state); return r.msg; });
  const roster = collectAdvertise(cfg, adv);
  const shareMsgs = roster.sites.filter((s) => !sim.dropBeforeShare?.includes(s.siteId)).map((s) => {
    const r = shareKeys(states.get(s.siteId)!, roster);
    states.set(s.siteId, r.state);
    return r.msg;
  });
  const { u2, inboxes } = routeShares(roster, shareMsgs);
  const masked = u2.filter((id) => !sim.dropBeforeMask?.includes(id)).map((id) => {
    const r = maskInput(states.get(id)!, inboxes[id], inputs.get(id)!);
    states.set(id, r.state);
    return r.msg;
  });
  const agg = aggregateMasked(roster, u2, masked);
  const answers = agg.survivors.filter((id) => !sim.dropBeforeUnmask?.includes(id)).map((id) => unmaskShares(states.get(id)!, agg.request));
  return { ...unmask(roster, agg, answers), agg, masked, states, answers, roster };
}

