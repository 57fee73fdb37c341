// The coordinator's Helm chart, rendered without helm by test/deploy/helm-render.ts (the
// Go-template subset the chart is kept within), parsed as YAML documents and checked: kinds,
// names that must agree across objects (PVC, ConfigMap, ports), the security context, and the
// ConfigMap's coordinator settings against the real coordinator.yaml schema.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import YAML from 'yaml';
import { DEPLOY } from './helpers.ts';
import { renderChart, renderTemplate, type RenderContext } from './helm-render.ts';
import { parseCoordinatorConfig } from '../../coordinator/config.ts';

const CHART = join(DEPLOY, 'helm', 'fedlora-coordinator');
const byKind = (docs: Record<string, any>[], kind: string) => docs.filter((d) => d.kind === kind);

describe('helm-render (the template subset)', () => {
  const ctx: RenderContext = { Values: { a: { b: 'x y', list: [1, 2], on: true, off: false, empty: {} } }, Release: { Name: 'r', Namespace: 'ns' }, Chart: { Name: 'c', Version: '1', AppVersion: '2' } };
  it('values, quote, toYaml | nindent, if/else, trimming', () => {
    expect(renderTemplate('n: {{ .Values.a.b | quote }} r={{ .Release.Name }}', ctx)).toBe('n: "x y" r=r');
    expect(renderTemplate('l:\n  {{- toYaml .Values.a.list | nindent 2 }}\n', ctx)).toBe('l:\n  - 1\n  - 2\n');
    expect(renderTemplate('{{- if .Values.a.on }}yes{{- else }}no{{- end }}', ctx)).toBe('yes');
    expect(renderTemplate('{{- if .Values.a.off }}yes{{ else }}no{{ end }}', ctx)).toBe('no');
    expect(renderTemplate('{{- if .Values.a.empty }}yes{{ end }}|{{ if not .Values.a.off }}n{{ end }}', ctx)).toBe('|n');
  });
  it('rejects what it does not support, so the chart cannot leave the subset unnoticed', () => {
    expect(() => renderTemplate('{{ include "x" . }}', ctx, 't.yaml')).toThrow(/unsupported/);
    expect(() => renderTemplate('{{ .Values.a.b | upper }}', ctx, 't.yaml')).toThrow(/unsupported pipeline stage/);
    expect(() => renderTemplate('{{ range .Values.a.list }}x{{ end }}', ctx, 't.yaml')).toThrow(/unsupported/);
    expect(() => renderTemplate('{{ if .Values.a.on }}x', ctx, 't.yaml')).toThrow(/without \{\{ end \}\}/);
    expect(() => renderTemplate('{{ .Values.a }}', ctx, 't.yaml')).toThrow(/without toYaml/);
  });
});

describe('deploy/helm/fedlora-coordinator with default values', () => {
  const { docs, files } = renderChart(CHART, { releaseName: 'consortium' });

  it('renders the expected objects', () => {
    expect(docs.map((d) => d.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'NetworkPolicy', 'PersistentVolumeClaim', 'Service', 'Service']);
    for (const d of docs) {
      expect(d.apiVersion, d.kind).toBeTruthy();
      expect(d.metadata.name.startsWith('consortium'), d.kind).toBe(true);
      expect(d.metadata.labels['app.kubernetes.io/instance']).toBe('consortium');
    }
    expect(files.get('templates/NOTES.txt')).toContain('deploy/consortium');
  });

  it('one replica, Recreate (one SQLite writer), non-root, read-only root file system, no privilege escalation', () => {
    const [dep] = byKind(docs, 'Deployment');
    expect(dep.spec.replicas).toBe(1);
    expect(dep.spec.strategy.type).toBe('Recreate');
    const pod = dep.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.securityContext.fsGroup).toBe(pod.securityContext.runAsGroup);
    const [c] = pod.containers;
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    expect(c.image).toBe('fedlora-coordinator:0.1.0');
    expect(c.resources.requests.memory).toBe('2Gi');
    // /tmp is writable (tsx's compile cache) although the root is read-only
    const mounts = Object.fromEntries(c.volumeMounts.map((m: any) => [m.name, m.mountPath]));
    expect(mounts.tmp).toBe('/tmp');
    expect(mounts.data).toBe('/data');
    expect(c.readinessProbe.httpGet.path).toBe('/healthz');
    expect(c.matchLabels).toBeUndefined();
    expect(dep.spec.selector.matchLabels).toEqual(Object.fromEntries(Object.entries(dep.spec.template.metadata.labels)));
  });

  it('the volumes, ConfigMap keys and env agree across objects', () => {
    const [dep] = byKind(docs, 'Deployment');
    const [pvc] = byKind(docs, 'PersistentVolumeClaim');
    const [cm] = byKind(docs, 'ConfigMap');
    const pod = dep.spec.template.spec;
    const vols = Object.fromEntries(pod.volumes.map((v: any) => [v.name, v]));
    expect(vols.data.persistentVolumeClaim.claimName).toBe(pvc.metadata.name);
    expect(vols.config.configMap.name).toBe(cm.metadata.name);
    expect(pvc.spec.resources.requests.storage).toBe('50Gi');
    expect(pvc.spec.storageClassName).toBeUndefined();
    const env = Object.fromEntries(pod.containers[0].env.map((e: any) => [e.name, e]));
    for (const e of Object.values(env) as any[]) {
      if (e.valueFrom) {
        expect(e.valueFrom.configMapKeyRef.name).toBe(cm.metadata.name);
        expect(Object.keys(cm.data)).toContain(e.valueFrom.configMapKeyRef.key);
      }
    }
    // the entrypoint merges this file: it is the ConfigMap key mounted at /etc/fedlora
    expect(env.FEDLORA_CONFIG_OVERRIDES.value).toBe('/etc/fedlora/coordinator-overrides.yaml');
    expect(Object.keys(cm.data)).toContain('coordinator-overrides.yaml');
    expect(cm.data.FEDLORA_PUBLIC_ENDPOINT.split(':')[0]).toBe(cm.data.FEDLORA_SANS.split(' ')[0]);
  });

  it("the ConfigMap's coordinator settings are a valid coordinator.yaml (strict schema) listening on all interfaces", () => {
    const [cm] = byKind(docs, 'ConfigMap');
    const cfg = parseCoordinatorConfig(YAML.parse(cm.data['coordinator-overrides.yaml']), 'configmap');
    expect(cfg.http.host).toBe('0.0.0.0');
    expect(cfg.federation.port).toBe(7443);
  });

  it('Services: federation + enrollment for the hospitals, HTTP cluster-internal; target ports exist on the container', () => {
    const [dep] = byKind(docs, 'Deployment');
    const portNames = new Map(dep.spec.template.spec.containers[0].ports.map((p: any) => [p.name, p.containerPort]));
    const svcs = byKind(docs, 'Service');
    const pub = svcs.find((s) => s.metadata.name === 'consortium')!;
    const http = svcs.find((s) => s.metadata.name === 'consortium-http')!;
    expect(pub.spec.type).toBe('LoadBalancer');
    expect(pub.spec.ports.map((p: any) => [p.name, p.port])).toEqual([['federation', 7443], ['enrollment', 7444]]);
    expect(http.spec.type).toBe('ClusterIP');
    expect(http.spec.ports[0].port).toBe(8080);
    for (const s of svcs) {
      expect(s.spec.selector).toEqual(dep.spec.selector.matchLabels);
      for (const p of s.spec.ports) expect(portNames.has(p.targetPort), `${s.metadata.name}:${p.name}`).toBe(true);
    }
    const [cm] = byKind(docs, 'ConfigMap');
    const cfg = YAML.parse(cm.data['coordinator-overrides.yaml']);
    expect(portNames.get('federation')).toBe(cfg.federation.port);
    expect(portNames.get('enrollment')).toBe(cfg.enrollment.port);
    expect(portNames.get('http')).toBe(cfg.http.port);
  });
});

describe('deploy/helm/fedlora-coordinator with overrides', () => {
  it('networkPolicy off drops the NetworkPolicy; a storage class is set on the PVC; a ClusterIP service', () => {
    const { docs } = renderChart(CHART, { values: { networkPolicy: { enabled: false }, persistence: { storageClassName: 'fast-ssd' }, service: { type: 'ClusterIP' } } });
    expect(byKind(docs, 'NetworkPolicy')).toEqual([]);
    expect(byKind(docs, 'PersistentVolumeClaim')[0].spec.storageClassName).toBe('fast-ssd');
    expect(byKind(docs, 'Service').find((s) => s.metadata.name === 'release-name')!.spec.type).toBe('ClusterIP');
  });
});
