// visionfleet-metrics-adapter: a small metrics API server (custom.metrics.k8s.io and
// external.metrics.k8s.io) for the local fleet, built on sigs.k8s.io/custom-metrics-apiserver (the
// library prometheus-adapter is built on). It serves per-pod metrics and external metrics whose values
// it reads from Prometheus with PromQL templates from a config file, so the standard
// HorizontalPodAutoscaler can scale Triton Deployments on Triton's own series (docs/local-fleet.md,
// "Autoscaling on Triton's metrics").
//
// Config (--config, YAML):
//
//	podLabel: pod              # the series label that names the pod (the scrape config relabels it)
//	namespaceLabel: namespace  # the series label that names its namespace
//	metrics:
//	  - name: visionfleet_triton_inference_rate
//	    query: sum by (<<.GroupBy>>) (rate(nv_inference_count{<<.LabelMatchers>>}[1m]))
//
//	externalMetrics:
//	  - name: visionfleet_class_inference_rate
//	    query: sum(rate(nv_inference_count{<<.LabelMatchers>>}[1m]))
//
// A query template sees <<.LabelMatchers>> (namespace="ns",pod=~"a|b": the pods the request
// selected) and <<.GroupBy>> (the pod label), as prometheus-adapter's metricsQuery does. Every
// result series must carry the pod label; its value becomes that pod's metric value. A pod without
// a series (or with NaN/Inf) is left out of the answer, which is how the HPA expects missing pods.
//
// An external metric's template sees <<.LabelMatchers>> made of the namespace and the HPA's metric
// selector (matchLabels and matchExpressions become =, !=, =~, !~ matchers on the series labels of
// the same names). Each result series is one item of the answer; the HPA adds them up, so a query
// that sums to one series gives the total the selector picked. An empty result is "no metric".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	"sigs.k8s.io/yaml"

	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider/helpers"
)

// version is stamped by build-binaries.sh (-X main.version=...).
var version = "dev"

type metricRule struct {
	Name  string `json:"name"`
	Query string `json:"query"`
	tmpl  *template.Template
}

type config struct {
	PodLabel        string       `json:"podLabel"`
	NamespaceLabel  string       `json:"namespaceLabel"`
	Metrics         []metricRule `json:"metrics"`
	ExternalMetrics []metricRule `json:"externalMetrics"`
}

func loadConfig(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &config{PodLabel: "pod", NamespaceLabel: "namespace"}
	if err := yaml.UnmarshalStrict(raw, c); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(c.Metrics)+len(c.ExternalMetrics) == 0 {
		return nil, fmt.Errorf("%s: no metrics", path)
	}
	for _, list := range []struct {
		what  string
		rules []metricRule
	}{{"metrics", c.Metrics}, {"externalMetrics", c.ExternalMetrics}} {
		seen := map[string]bool{}
		for i := range list.rules {
			m := &list.rules[i]
			if m.Name == "" || m.Query == "" || seen[m.Name] {
				return nil, fmt.Errorf("%s: %s[%d] needs a unique name and a query", path, list.what, i)
			}
			seen[m.Name] = true
			t, err := template.New(m.Name).Delims("<<", ">>").Option("missingkey=error").Parse(m.Query)
			if err != nil {
				return nil, fmt.Errorf("%s: %s %s: %v", path, list.what, m.Name, err)
			}
			m.tmpl = t
		}
	}
	return c, nil
}

// promClient runs instant queries against Prometheus's HTTP API.
type promClient struct {
	base string
	http *http.Client
}

type promSample struct {
	labels map[string]string
	value  float64
}

func (p *promClient) query(ctx context.Context, q string) ([]promSample, error) {
	u := p.base + "/api/v1/query?" + url.Values{"query": {q}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("prometheus answered %s with no JSON: %v", resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s (%s)", body.Error, resp.Status)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus: the query gave a %s, not an instant vector", body.Data.ResultType)
	}
	out := make([]promSample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		out = append(out, promSample{labels: r.Metric, value: v})
	}
	return out, nil
}

type promProvider struct {
	cfg    *config
	prom   *promClient
	client dynamic.Interface
	mapper meta.RESTMapper
	rules  map[string]*metricRule
}

var podsGR = schema.GroupResource{Resource: "pods"}

func (p *promProvider) ListAllMetrics() []provider.CustomMetricInfo {
	out := make([]provider.CustomMetricInfo, 0, len(p.cfg.Metrics))
	for _, m := range p.cfg.Metrics {
		out = append(out, provider.CustomMetricInfo{GroupResource: podsGR, Namespaced: true, Metric: m.Name})
	}
	return out
}

func (p *promProvider) rule(info provider.CustomMetricInfo) (*metricRule, provider.CustomMetricInfo, error) {
	norm, _, err := info.Normalized(p.mapper)
	if err != nil {
		return nil, info, err
	}
	r := p.rules[norm.Metric]
	if r == nil || norm.GroupResource != podsGR || !norm.Namespaced {
		return nil, norm, provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	return r, norm, nil
}

// values queries the rule for these pods of one namespace: pod name -> value.
func (p *promProvider) values(ctx context.Context, r *metricRule, namespace string, pods []string) (map[string]float64, error) {
	if len(pods) == 0 {
		return map[string]float64{}, nil
	}
	sorted := append([]string(nil), pods...)
	sort.Strings(sorted)
	// Pod names are DNS subdomains ([a-z0-9.-]): a '.' in the regex matches any character, which can
	// only widen the match; the answer is filtered by exact name below.
	matchers := fmt.Sprintf(`%s=%q,%s=~%q`, p.cfg.NamespaceLabel, namespace, p.cfg.PodLabel, strings.Join(sorted, "|"))
	var q bytes.Buffer
	if err := r.tmpl.Execute(&q, map[string]string{"LabelMatchers": matchers, "GroupBy": p.cfg.PodLabel}); err != nil {
		return nil, err
	}
	samples, err := p.prom.query(ctx, q.String())
	if err != nil {
		klog.Errorf("metric %s: query %q: %v", r.Name, q.String(), err)
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range pods {
		want[n] = true
	}
	out := map[string]float64{}
	for _, s := range samples {
		name := s.labels[p.cfg.PodLabel]
		if ns, ok := s.labels[p.cfg.NamespaceLabel]; ok && ns != namespace {
			continue
		}
		if !want[name] || math.IsNaN(s.value) || math.IsInf(s.value, 0) {
			continue
		}
		out[name] = s.value
	}
	klog.V(2).Infof("metric %s in %s: %d pods asked, %d values (%s)", r.Name, namespace, len(pods), len(out), q.String())
	return out, nil
}

func (p *promProvider) metricValue(r *metricRule, namespace, pod string, v float64, metricSelector labels.Selector) custom_metrics.MetricValue {
	window := int64(60)
	mv := custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{APIVersion: "/v1", Kind: "Pod", Name: pod, Namespace: namespace},
		Metric:          custom_metrics.MetricIdentifier{Name: r.Name},
		Timestamp:       metav1.Now(),
		WindowSeconds:   &window,
		Value:           *resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI),
	}
	if metricSelector != nil && !metricSelector.Empty() {
		if sel, err := metav1.ParseToLabelSelector(metricSelector.String()); err == nil {
			mv.Metric.Selector = sel
		}
	}
	return mv
}

func (p *promProvider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	r, norm, err := p.rule(info)
	if err != nil {
		return nil, err
	}
	vals, err := p.values(ctx, r, name.Namespace, []string{name.Name})
	if err != nil {
		return nil, err
	}
	v, ok := vals[name.Name]
	if !ok {
		return nil, provider.NewMetricNotFoundForError(norm.GroupResource, norm.Metric, name.Name)
	}
	mv := p.metricValue(r, name.Namespace, name.Name, v, metricSelector)
	return &mv, nil
}

func (p *promProvider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	r, norm, err := p.rule(info)
	if err != nil {
		return nil, err
	}
	names, err := helpers.ListObjectNames(p.mapper, p.client, namespace, selector, norm)
	if err != nil {
		return nil, err
	}
	vals, err := p.values(ctx, r, namespace, names)
	if err != nil {
		return nil, err
	}
	items := make([]custom_metrics.MetricValue, 0, len(vals))
	for _, n := range names {
		if v, ok := vals[n]; ok {
			items = append(items, p.metricValue(r, namespace, n, v, metricSelector))
		}
	}
	return &custom_metrics.MetricValueList{Items: items}, nil
}

// -- external.metrics.k8s.io ----------------------------------------------------------------------

// promMatchers turns an HPA's metric selector into PromQL label matchers on the series' labels.
func promMatchers(sel labels.Selector) ([]string, error) {
	if sel == nil || sel.Empty() {
		return nil, nil
	}
	reqs, selectable := sel.Requirements()
	if !selectable {
		return nil, fmt.Errorf("selector %q selects nothing", sel.String())
	}
	var out []string
	for _, r := range reqs {
		vals := r.Values().List() // sorted
		quoted := make([]string, len(vals))
		for i, v := range vals {
			quoted[i] = regexp.QuoteMeta(v)
		}
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals:
			out = append(out, fmt.Sprintf("%s=%q", r.Key(), vals[0]))
		case selection.NotEquals:
			out = append(out, fmt.Sprintf("%s!=%q", r.Key(), vals[0]))
		case selection.In:
			out = append(out, fmt.Sprintf("%s=~%q", r.Key(), strings.Join(quoted, "|")))
		case selection.NotIn:
			out = append(out, fmt.Sprintf("%s!~%q", r.Key(), strings.Join(quoted, "|")))
		case selection.Exists:
			out = append(out, fmt.Sprintf("%s!=\"\"", r.Key()))
		case selection.DoesNotExist:
			out = append(out, fmt.Sprintf("%s=\"\"", r.Key()))
		default:
			return nil, fmt.Errorf("selector %q: operator %s has no PromQL matcher", sel.String(), r.Operator())
		}
	}
	return out, nil
}

type externalProvider struct {
	cfg   *config
	prom  *promClient
	rules map[string]*metricRule
}

func (p *externalProvider) ListAllExternalMetrics() []provider.ExternalMetricInfo {
	out := make([]provider.ExternalMetricInfo, 0, len(p.cfg.ExternalMetrics))
	for _, m := range p.cfg.ExternalMetrics {
		out = append(out, provider.ExternalMetricInfo{Metric: m.Name})
	}
	return out
}

func (p *externalProvider) GetExternalMetric(ctx context.Context, namespace string, metricSelector labels.Selector, info provider.ExternalMetricInfo) (*external_metrics.ExternalMetricValueList, error) {
	r := p.rules[info.Metric]
	if r == nil {
		return nil, provider.NewMetricNotFoundError(schema.GroupResource{Group: "external.metrics.k8s.io"}, info.Metric)
	}
	matchers, err := promMatchers(metricSelector)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	matchers = append([]string{fmt.Sprintf("%s=%q", p.cfg.NamespaceLabel, namespace)}, matchers...)
	var q bytes.Buffer
	if err := r.tmpl.Execute(&q, map[string]string{"LabelMatchers": strings.Join(matchers, ","), "GroupBy": p.cfg.PodLabel}); err != nil {
		return nil, err
	}
	samples, err := p.prom.query(ctx, q.String())
	if err != nil {
		klog.Errorf("external metric %s: query %q: %v", r.Name, q.String(), err)
		return nil, err
	}
	window := int64(60)
	items := []external_metrics.ExternalMetricValue{}
	for _, s := range samples {
		if math.IsNaN(s.value) || math.IsInf(s.value, 0) {
			continue
		}
		items = append(items, external_metrics.ExternalMetricValue{
			MetricName:    r.Name,
			MetricLabels:  s.labels,
			Timestamp:     metav1.Now(),
			WindowSeconds: &window,
			Value:         *resource.NewMilliQuantity(int64(math.Round(s.value*1000)), resource.DecimalSI),
		})
	}
	klog.V(2).Infof("external metric %s in %s: %d series (%s)", r.Name, namespace, len(items), q.String())
	if len(items) == 0 {
		return nil, provider.NewMetricNotFoundError(schema.GroupResource{Group: "external.metrics.k8s.io"}, info.Metric)
	}
	return &external_metrics.ExternalMetricValueList{Items: items}, nil
}

type adapter struct {
	basecmd.AdapterBase
	configPath    string
	prometheusURL string
}

func main() {
	for _, a := range os.Args[1:] {
		if a == "--version" || a == "-version" {
			fmt.Printf("visionfleet-metrics-adapter %s\n", version)
			return
		}
	}
	logs.InitLogs()
	defer logs.FlushLogs()

	cmd := &adapter{}
	cmd.Name = "visionfleet-metrics-adapter"
	cmd.Flags().StringVar(&cmd.configPath, "config", "", "YAML file of metrics and their PromQL templates")
	cmd.Flags().StringVar(&cmd.prometheusURL, "prometheus-url", "http://127.0.0.1:9090", "Prometheus base URL")
	logs.AddFlags(cmd.Flags())
	if err := cmd.Flags().Parse(os.Args); err != nil {
		klog.Fatalf("flags: %v", err)
	}
	if cmd.configPath == "" {
		klog.Fatalf("--config is required")
	}
	cfg, err := loadConfig(cmd.configPath)
	if err != nil {
		klog.Fatalf("config: %v", err)
	}
	client, err := cmd.DynamicClient()
	if err != nil {
		klog.Fatalf("dynamic client: %v", err)
	}
	mapper, err := cmd.RESTMapper()
	if err != nil {
		klog.Fatalf("REST mapper: %v", err)
	}
	p := &promProvider{
		cfg:    cfg,
		prom:   &promClient{base: strings.TrimRight(cmd.prometheusURL, "/"), http: &http.Client{Timeout: 10 * time.Second}},
		client: client,
		mapper: mapper,
		rules:  map[string]*metricRule{},
	}
	for i := range cfg.Metrics {
		p.rules[cfg.Metrics[i].Name] = &cfg.Metrics[i]
	}
	cmd.WithCustomMetrics(p)
	ext := &externalProvider{cfg: cfg, prom: p.prom, rules: map[string]*metricRule{}}
	for i := range cfg.ExternalMetrics {
		ext.rules[cfg.ExternalMetrics[i].Name] = &cfg.ExternalMetrics[i]
	}
	cmd.WithExternalMetrics(ext)
	names := make([]string, 0, len(cfg.Metrics))
	for _, m := range cfg.Metrics {
		names = append(names, m.Name)
	}
	external := make([]string, 0, len(cfg.ExternalMetrics))
	for _, m := range cfg.ExternalMetrics {
		external = append(external, m.Name)
	}
	klog.Infof("serving custom.metrics.k8s.io for pods: %s; external.metrics.k8s.io: %s (from %s)",
		strings.Join(names, ", "), strings.Join(external, ", "), p.prom.base)
	if err := cmd.Run(context.Background()); err != nil {
		klog.Fatalf("adapter: %v", err)
	}
}
