package parse

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func unix(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixNano()
}

type lineCase struct {
	name   string
	opts   Options
	lines  []string // earlier lines (headers) fed first
	line   string
	reason Reason
	want   Record
}

func runCases(t *testing.T, cases []lineCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var rec Record
			for _, l := range tc.lines {
				p.Parse([]byte(l), &rec)
			}
			rec = Record{}
			got := p.Parse([]byte(tc.line), &rec)
			if got != tc.reason {
				t.Fatalf("reason %v, want %v", got, tc.reason)
			}
			if got != OK {
				return
			}
			if rec.Time != tc.want.Time || rec.TimeRes != tc.want.TimeRes || rec.Status != tc.want.Status ||
				rec.HasDuration != tc.want.HasDuration || math.Abs(rec.Duration-tc.want.Duration) > 1e-12 {
				t.Fatalf("got %+v\nwant %+v", rec, tc.want)
			}
		})
	}
}

func TestNCSA(t *testing.T) {
	const ua = `"-" "curl/7.54.0"`
	base := `192.168.64.1 - - [07/Feb/2020:11:48:51 +0000] "POST /products HTTP/1.1" 200 59 `
	t0 := unix("2020-02-07T11:48:51Z")
	msec := strings.Replace(base, "07/Feb/2020:11:48:51 +0000", "1581076131.123", 1)
	runCases(t, []lineCase{
		{"clf NASA", Options{Format: "clf"}, nil,
			`in24.inetnebr.com - - [01/Aug/1995:00:00:01 -0400] "GET /shuttle/missions/sts-68/news/sts-68-mcc-05.txt HTTP/1.0" 200 1839`,
			OK, Record{Time: unix("1995-08-01T04:00:01Z"), TimeRes: 1e9, Status: 200}},
		{"clf NASA broken line, first half", Options{Format: "clf"}, nil,
			`uplherc.upl.com - - [01/Aug/1995:00:00:44 -0400] "GET /shuttle/missions`, Syntax, Record{}},
		{"clf NASA broken line, second half", Options{Format: "clf"}, nil,
			`/sts-71/sts-71-patch-small.gif HTTP/1.0" 200 12054`, Syntax, Record{}},
		{"clf broken inside the date", Options{Format: "clf"}, nil,
			`133.43.96.45 - - [01/Aug/199`, Syntax, Record{}},
		{"clf bad month", Options{Format: "clf"}, nil,
			`h - - [01/Foo/1995:00:00:01 -0400] "GET / HTTP/1.0" 200 1`, BadTime, Record{}},
		{"clf 30 February", Options{Format: "clf"}, nil,
			`h - - [30/Feb/1995:00:00:01 -0400] "GET / HTTP/1.0" 200 1`, BadTime, Record{}},
		{"clf bad status", Options{Format: "clf"}, nil,
			`h - - [01/Aug/1995:00:00:01 -0400] "GET / HTTP/1.0" 2x0 1`, BadStatus, Record{}},
		{"blank", Options{Format: "clf"}, nil, "  \r", Meta, Record{}},
		{"combined lnav", Options{Format: "combined"}, nil,
			`192.168.202.254 - - [20/Jul/2009:22:59:29 +0000] "GET /vmw/vSphere/default/vmkboot.gz HTTP/1.0" 404 46210 "-" "gPXE/0.9.7"`,
			OK, Record{Time: unix("2009-07-20T22:59:29Z"), TimeRes: 1e9, Status: 404}},
		{"combined escaped quote in request", Options{Format: "combined"}, nil,
			`h - - [20/Jul/2009:22:59:29 +0000] "GET /a\"b HTTP/1.0" 200 1 "-" "x"`,
			OK, Record{Time: unix("2009-07-20T22:59:29Z"), TimeRes: 1e9, Status: 200}},
		{"combined missing user agent", Options{Format: "combined"}, nil,
			`h - - [20/Jul/2009:22:59:29 +0000] "GET / HTTP/1.0" 200 1 "-"`, Syntax, Record{}},
		// Written by us: Apache LogFormat "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %D".
		{"apache %D", Options{Format: "apache"}, nil, base + ua + ` 1234`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.001234, HasDuration: true}},
		{"apache without %D", Options{Format: "apache"}, nil, base + ua, BadDuration, Record{}},
		{"apache unit override", Options{Format: "apache", Unit: 1e-3}, nil, base + ua + ` 1234`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 1.234, HasDuration: true}},
		// Written by us: nginx log_format combined + " $request_time $upstream_response_time".
		{"nginx request_time", Options{Format: "nginx"}, nil, base + ua + ` 0.250 0.100, 0.004`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.25, HasDuration: true}},
		{"nginx upstream multi", Options{Format: "nginx", Upstream: true}, nil, base + ua + ` 0.250 0.100, 0.004`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.104, HasDuration: true}},
		{"nginx upstream redirect", Options{Format: "nginx", Upstream: true}, nil, base + ua + ` 0.250 0.100 : 0.020`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.12, HasDuration: true}},
		{"nginx upstream dash", Options{Format: "nginx", Upstream: true}, nil, base + ua + ` 0.250 -`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200}},
		{"nginx upstream garbage", Options{Format: "nginx", Upstream: true}, nil, base + ua + ` 0.250 abc`,
			BadDuration, Record{}},
		{"nginx request_time missing", Options{Format: "nginx"}, nil, base + ua, BadDuration, Record{}},
		{"nginx negative", Options{Format: "nginx"}, nil, base + ua + ` -1`, BadDuration, Record{}},
		// log_format with [$msec]: the end of the request in ms; the
		// arrival is 250 ms earlier.
		{"nginx msec", Options{Format: "nginx"}, nil, msec + ua + ` 0.250`,
			OK, Record{Time: t0 + 123e6 - 250e6, TimeRes: 1e6, Status: 200, Duration: 0.25, HasDuration: true}},
		{"nginx msec upstream", Options{Format: "nginx", Upstream: true}, nil, msec + ua + ` 0.250 0.100`,
			OK, Record{Time: t0 + 123e6, TimeRes: 1e6, Status: 200, Duration: 0.1, HasDuration: true}},
		{"apache sec.msec_frac", Options{Format: "apache"}, nil, msec + ua + ` 1234`,
			OK, Record{Time: t0 + 123e6, TimeRes: 1e6, Status: 200, Duration: 0.001234, HasDuration: true}},
		{"nginx ISO 8601 with fraction", Options{Format: "nginx"}, nil,
			strings.Replace(base, "07/Feb/2020:11:48:51 +0000", "2020-02-07T12:48:51.5+01:00", 1) + ua + ` 0.5`,
			OK, Record{Time: t0, TimeRes: 1e8, Status: 200, Duration: 0.5, HasDuration: true}},
		{"nginx msec garbage", Options{Format: "nginx"}, nil,
			strings.Replace(base, "07/Feb/2020:11:48:51 +0000", "1581076131.12x", 1) + ua + ` 0.5`, BadTime, Record{}},
	})
}

func TestIngressFixtureLines(t *testing.T) {
	pre := `192.168.64.14 - - [07/Feb/2020:12:02:42 +0000] "GET /v2/some HTTP/1.1" 200 61 "-" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.14; rv:72.0) Gecko/20100101 Firefox/72.0" 348 0.001 [default-web2-8080] [] `
	t0 := unix("2020-02-07T12:02:42Z")
	runCases(t, []lineCase{
		{"request_time", Options{Format: "ingress_nginx"}, nil,
			pre + `172.17.0.6:8080, 172.17.0.7:8080 61, 100 0.100, 0.004 200, 203 835136ae24486dbb4156dcbe21f5d402`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.001, HasDuration: true}},
		{"upstream multi", Options{Format: "ingress_nginx", Upstream: true}, nil,
			pre + `172.17.0.6:8080, 172.17.0.7:8080 61, 100 0.100, 0.004 200, 203 835136ae24486dbb4156dcbe21f5d402`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.104, HasDuration: true}},
		{"upstream partly dash", Options{Format: "ingress_nginx", Upstream: true}, nil,
			pre + `172.17.0.6:8080, 172.17.0.7:8080 - 0.100, - 200, - 835136ae24486dbb4156dcbe21f5d402`,
			OK, Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.1, HasDuration: true}},
		{"no upstream (400 from nginx itself)", Options{Format: "ingress_nginx", Upstream: true}, nil,
			`192.168.64.1 - - [07/Feb/2020:11:49:50 +0000] "PATCHp /products/42 HTTP/1.1" 400 163 "-" "-" 0 0.000 [] [] - - - - 4c7d2079340e68353c7d0dfff00b904b`,
			OK, Record{Time: unix("2020-02-07T11:49:50Z"), TimeRes: 1e9, Status: 400}},
		{"unix socket upstream", Options{Format: "ingress_nginx", Upstream: true}, nil,
			`192.168.64.1 - - [07/Feb/2020:11:56:54 +0000] "GET /products/42 HTTP/1.1" 200 59 "-" "Mozilla/5.0" 369 0.002 [default-web-8080] [] unix:/var/run/php-fpm.sock 59 0.002 200 0f76ea730f282d5759018eb756b23b14`,
			OK, Record{Time: unix("2020-02-07T11:56:54Z"), TimeRes: 1e9, Status: 200, Duration: 0.002, HasDuration: true}},
		{"IPv6", Options{Format: "ingress_nginx"}, nil,
			`2a02:cf40::4e36 - - [24/Aug/2022:18:05:41 +0000] "GET /favicon.ico HTTP/2.0" 502 552 "https://localhost:8080/" "Mozilla/5.0" 27 0.000 [localhost-8080] [] [2a02:cf40::7]:5000, [2a02:cf40::4e36]:5000 0, 0 0.000, 0.000 502, 502 3db73c6c673c4256ade033a6ce08c2ab`,
			OK, Record{Time: unix("2022-08-24T18:05:41Z"), TimeRes: 1e9, Status: 502, Duration: 0, HasDuration: true}},
	})
}

func TestHAProxy(t *testing.T) {
	runCases(t, []lineCase{
		{"syslog-wrapped", Options{Format: "haproxy"}, nil,
			`Feb 25 16:20:09 192.168.4.2 haproxy[7]: 89.247.124.65:15564 [25/Feb/2019:16:20:06.321] prod_http_in~ bk_ktest_kt/nginx_sonst 0/0/1/43/2707 200 26170 - - ---- 3/3/1/1/0 0/0 {Mozilla/5.0} {} "GET /portal/ HTTP/1.1"`,
			OK, Record{Time: unix("2019-02-25T16:20:06.321Z"), TimeRes: 1e6, Status: 200, Duration: 2.707, HasDuration: true}},
		{"upstream Tr", Options{Format: "haproxy", Upstream: true}, nil,
			`Feb 25 16:20:09 192.168.4.2 haproxy[7]: 89.247.124.65:15564 [25/Feb/2019:16:20:06.321] prod_http_in~ bk_ktest_kt/nginx_sonst 0/0/1/43/2707 200 26170 - - ---- 3/3/1/1/0 0/0 {Mozilla/5.0} {} "GET /portal/ HTTP/1.1"`,
			OK, Record{Time: unix("2019-02-25T16:20:06.321Z"), TimeRes: 1e6, Status: 200, Duration: 0.043, HasDuration: true}},
		{"plain, aborted", Options{Format: "haproxy"}, nil,
			`10.0.0.1:1234 [25/Feb/2019:16:20:06.321] fe be/srv 0/0/1/-1/+5 -1 0 - - CD-- 1/1/0/0/0 0/0 "GET / HTTP/1.1"`,
			OK, Record{Time: unix("2019-02-25T16:20:06.321Z"), TimeRes: 1e6, Status: 0, Duration: 0.005, HasDuration: true}},
		{"aborted, upstream -1", Options{Format: "haproxy", Upstream: true}, nil,
			`10.0.0.1:1234 [25/Feb/2019:16:20:06.321] fe be/srv 0/0/1/-1/5 -1 0 - - CD-- 1/1/0/0/0 0/0 "GET / HTTP/1.1"`,
			OK, Record{Time: unix("2019-02-25T16:20:06.321Z"), TimeRes: 1e6, Status: 0}},
		{"start-up message", Options{Format: "haproxy"}, nil,
			`Feb 25 16:19:38 192.168.4.2 haproxy[1]: Proxy prod_http_in started.`, NotRequest, Record{}},
		{"SSL error", Options{Format: "haproxy"}, nil,
			`Feb 25 16:20:15 192.168.4.2 haproxy[7]: 95.216.197.33:56224 [25/Feb/2019:16:20:10.111] prod_http_in/sktst2: SSL handshake failure`, NotRequest, Record{}},
		{"tcplog", Options{Format: "haproxy"}, nil,
			`10.0.0.1:1234 [25/Feb/2019:16:20:06.321] fe be/srv 0/0/5 212 -- 1/1/0/0/0 0/0`, NotRequest, Record{}},
		{"bad date", Options{Format: "haproxy"}, nil,
			`10.0.0.1:1234 [25/Feb/2019:26:20:06.321] fe be/srv 0/0/1/2/5 200 0`, BadTime, Record{}},
	})
}

func TestW3C(t *testing.T) {
	iis := []string{"#Software: Microsoft Internet Information Services 8.5", "#Version: 1.0", "#Date: 2015-01-13 00:32:17",
		"#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status sc-bytes cs-bytes time-taken"}
	runCases(t, []lineCase{
		{"IIS", Options{Format: "w3c"}, iis,
			`2015-01-13 00:32:17 100.79.192.81 GET /robots.txt - 80 - 157.55.39.146 Mozilla/5.0+(compatible;+bingbot/2.0;++http://www.bing.com/bingbot.htm) - 404 0 2 1405 242 157`,
			OK, Record{Time: unix("2015-01-13T00:32:17Z"), TimeRes: 1e9, Status: 404, Duration: 0.157, HasDuration: true}},
		{"no header", Options{Format: "w3c"}, nil,
			`2015-01-13 00:32:17 100.79.192.81 GET /robots.txt - 80 - 157.55.39.146 x - 404 0 2 1405 242 157`, NoHeader, Record{}},
		{"directive", Options{Format: "w3c"}, nil, "#Version: 1.0", Meta, Record{}},
		{"too few fields", Options{Format: "w3c"}, iis, `2015-01-13 00:32:17 100.79.192.81 GET`, Syntax, Record{}},
		{"header changes columns", Options{Format: "w3c"}, append(iis, "#Fields: time-taken sc-status time date"),
			`12 200 01:02:03.5 2015-01-14`,
			OK, Record{Time: unix("2015-01-14T01:02:03.5Z"), TimeRes: 1e8, Status: 200, Duration: 0.012, HasDuration: true}},
		{"quoted fields and TimeTakenMS (lnav w3c.3)", Options{Format: "w3c"},
			[]string{"#Fields:   date-local time-local   s-ip   cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) cs(Host) sc-status sc-substatus sc-win32-status TimeTakenMS"},
			`2012-08-15 17:00:00.675 10.10.28.140 GET /hello/world/6,681965 - 80 - "173.5.0.0" "Mozilla/5.0 (Macintosh)" - "hello.example.com" 404 " ""garbage"" w/ spaces " 0 359`,
			OK, Record{Time: unix("2012-08-15T17:00:00.675Z"), TimeRes: 1e6, Status: 404, Duration: 0.359, HasDuration: true}},
		{"date from #Date directive", Options{Format: "w3c"}, []string{"#Date: 2001-10-31 00:00:18", "#Fields: time sc-status"},
			`00:00:19 200`, OK, Record{Time: unix("2001-10-31T00:00:19Z"), TimeRes: 1e9, Status: 200}},
		{"unterminated quote", Options{Format: "w3c"}, iis, `2015-01-13 00:32:17 "oops`, Syntax, Record{}},
		{"configured names", Options{Format: "w3c", Fields: Fields{Duration: "ms", Status: "code"}},
			[]string{"#Fields: date time code ms"}, `2015-01-13 00:32:17 503 20`,
			OK, Record{Time: unix("2015-01-13T00:32:17Z"), TimeRes: 1e9, Status: 503, Duration: 0.02, HasDuration: true}},
	})
}

func TestJSON(t *testing.T) {
	// Written by us.
	runCases(t, []lineCase{
		{"defaults", Options{Format: "json"}, nil,
			`{"time":"2024-05-01T10:00:00.250+02:00","status":503,"duration":0.2,"nested":{"time":"x","a":[1,{"b":"}"}]}}`,
			OK, Record{Time: unix("2024-05-01T08:00:00.25Z"), TimeRes: 1e6, Status: 503, Duration: 0.2, HasDuration: true}},
		{"named fields, strings, unit ms", Options{Format: "json", Unit: 1e-3, Fields: Fields{Time: "ts", Status: "code", Duration: "took_ms"}, TimeFormat: "unix_ms"}, nil,
			` { "ts" : 1714557600123 , "code" : "200", "took_ms": "15" } `,
			OK, Record{Time: unix("2024-05-01T10:00:00.123Z"), TimeRes: 1e6, Status: 200, Duration: 0.015, HasDuration: true}},
		{"numeric time as unix seconds", Options{Format: "json"}, nil, `{"time":1714557600.5,"status":200}`,
			OK, Record{Time: unix("2024-05-01T10:00:00.5Z"), TimeRes: 1e8, Status: 200}},
		{"null duration", Options{Format: "json"}, nil, `{"time":"2024-05-01T10:00:00Z","duration":null}`,
			OK, Record{Time: unix("2024-05-01T10:00:00Z"), TimeRes: 1e9}},
		{"missing time", Options{Format: "json"}, nil, `{"status":200}`, BadTime, Record{}},
		{"not an object", Options{Format: "json"}, nil, `[1,2]`, BadJSON, Record{}},
		{"truncated", Options{Format: "json"}, nil, `{"time":"2024-05-01T10:00:00Z","status":2`, BadJSON, Record{}},
		{"trailing garbage", Options{Format: "json"}, nil, `{"time":"2024-05-01T10:00:00Z"} x`, BadJSON, Record{}},
		{"bad status", Options{Format: "json"}, nil, `{"time":"2024-05-01T10:00:00Z","status":"OK"}`, BadStatus, Record{}},
		{"clf time", Options{Format: "json", TimeFormat: "clf"}, nil, `{"time":"[01/Aug/1995:00:00:01 -0400]"}`,
			OK, Record{Time: unix("1995-08-01T04:00:01Z"), TimeRes: 1e9}},
	})
}

func TestRegex(t *testing.T) {
	tsv := Options{Format: "regex", TimeFormat: "unix",
		Regex: `^[^\t]*\t[^\t]*\t(?P<time>\d+)\t[^\t]*\t[^\t]*\t(?P<status>\d+)\t`}
	runCases(t, []lineCase{
		{"NASA tsv", tsv, nil, "pppa006.compuserve.com\t-\t807256800\tGET\t/images/launch-logo.gif\t200\t1713\t\t",
			OK, Record{Time: 807256800e9, TimeRes: 1e9, Status: 200}},
		{"NASA tsv header", tsv, nil, "host\tlogname\ttime\tmethod\turl\tresponse\tbytes\treferer\tuseragent", NoMatch, Record{}},
		{"duration group", Options{Format: "regex", Regex: `^(?P<time>\S+) (?P<status>\d+) (?P<duration>[\d.]+)$`}, nil,
			"2024-05-01T10:00:00Z 200 0.5", OK, Record{Time: unix("2024-05-01T10:00:00Z"), TimeRes: 1e9, Status: 200, Duration: 0.5, HasDuration: true}},
		{"Go layout", Options{Format: "regex", TimeFormat: "2006/01/02 15:04:05", Regex: `^(?P<time>\S+ \S+) `}, nil,
			"2024/05/01 10:00:00 x", OK, Record{Time: unix("2024-05-01T10:00:00Z"), TimeRes: 1e9}},
	})
}

func TestNewRejects(t *testing.T) {
	for _, o := range []Options{
		{Format: "nope"},
		{Format: "regex"},
		{Format: "regex", Regex: "("},
		{Format: "regex", Regex: `(?P<status>\d+)`},
		{Format: "json", TimeFormat: "whenever"},
		{Format: "w3c", Upstream: true},
		{Format: "nginx", Unit: math.NaN()},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// fixtureCounts parses a whole fixture and counts reasons.
func fixtureCounts(t *testing.T, file string, o Options) (counts [NumReasons]int, recs []Record) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		reason := p.Parse(sc.Bytes(), &r)
		counts[reason]++
		if reason == OK {
			recs = append(recs, r)
		}
	}
	return counts, recs
}

func TestFixtures(t *testing.T) {
	tests := []struct {
		file     string
		opts     Options
		ok, meta int
		bad      map[Reason]int
		durs     int // records with a duration
	}{
		{"beats_nginx_ingress_controller.log", Options{Format: "ingress_nginx"}, 29, 0, nil, 29},
		{"beats_nginx_ingress_controller.log", Options{Format: "ingress_nginx", Upstream: true}, 29, 0, nil, 27},
		{"lnav_logfile_access_log.0", Options{Format: "combined"}, 3, 0, nil, 0},
		{"nasa_Aug95_head300.log", Options{Format: "clf"}, 286, 0, map[Reason]int{Syntax: 14}, 0},
		{"lnav_logfile_haproxy.0", Options{Format: "haproxy"}, 13, 0, map[Reason]int{NotRequest: 4}, 13},
		{"lnav_logfile_w3c_big.0", Options{Format: "w3c"}, 210, 44, nil, 210},
		{"lnav_logfile_w3c.3", Options{Format: "w3c"}, 3, 7, nil, 3},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.opts.Format, func(t *testing.T) {
			counts, recs := fixtureCounts(t, tc.file, tc.opts)
			if counts[OK] != tc.ok || counts[Meta] != tc.meta {
				t.Errorf("ok %d meta %d, want %d and %d (all: %v)", counts[OK], counts[Meta], tc.ok, tc.meta, counts)
			}
			for r := Syntax; r < NumReasons; r++ {
				if counts[r] != tc.bad[r] {
					t.Errorf("%v: %d, want %d", r, counts[r], tc.bad[r])
				}
			}
			d := 0
			for _, r := range recs {
				if r.HasDuration {
					d++
				}
				if r.Status < 100 || r.Status > 599 || r.Time <= 0 {
					t.Errorf("implausible record %+v", r)
				}
			}
			if d != tc.durs {
				t.Errorf("%d records with a duration, want %d", d, tc.durs)
			}
		})
	}
}

func TestDecimal(t *testing.T) {
	for in, want := range map[string]float64{"0.004": 0.004, "12": 12, "+130": 130, "0": 0, "1.5": 1.5} {
		if v, ok := decimal([]byte(in)); !ok || v != want {
			t.Errorf("decimal(%q) = %v, %v", in, v, ok)
		}
	}
	for _, in := range []string{"", "-1", "1.", ".", "1.2.3", "1e3", "abc", "9999999999999999999999", "+"} {
		if v, ok := decimal([]byte(in)); ok {
			t.Errorf("decimal(%q) = %v, accepted", in, v)
		}
	}
}

func TestTimeAgreesWithPackageTime(t *testing.T) {
	for _, s := range []string{"01/Jan/1970:00:00:00 +0000", "29/Feb/2000:23:59:59 -0130", "31/Dec/2199:12:00:00 +1400", "01/Mar/2100:00:00:00 +0000"} {
		want, err := time.Parse("02/Jan/2006:15:04:05 -0700", s)
		if err != nil {
			t.Fatal(err)
		}
		got, res, ok := clfTime([]byte(s))
		if !ok || got != want.UnixNano() || res != 1e9 {
			t.Errorf("clfTime(%q) = %d %v, want %d", s, got, ok, want.UnixNano())
		}
	}
	if _, _, ok := clfTime([]byte("29/Feb/2100:00:00:00 +0000")); ok {
		t.Error("29 Feb 2100 accepted (not a leap year)")
	}
}
