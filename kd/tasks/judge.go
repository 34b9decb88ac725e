package tasks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/kdnative/kdnative/kd/elicit"
)

// Judge scores open-ended answers with an OpenAI-compatible chat endpoint
// (kdnative serve, vLLM, a hosted API) through elicit's client, which
// retries with backoff. Judgements are kept in Cache, so a run that stops
// (or is run again) asks only for what it has not got.
type Judge struct {
	Client *elicit.Client
	// Cache is a JSONL file of judgements, read on start and appended to
	// ("" keeps none).
	Cache string
	// MaxTokens bounds the judge's reply (default 512).
	MaxTokens int
	// Concurrency is how many requests are in flight (default 4).
	Concurrency int

	mu    sync.Mutex
	have  map[string]judgeRecord
	cache *os.File
}

// judgeRecord is one cached judgement. Key hashes the judge model and the
// whole judging prompt (rubric, question, reference and the model's answer),
// so a changed rubric or answer is judged again.
type judgeRecord struct {
	Key       string  `json:"key"`
	ID        string  `json:"id"`
	AnswerSHA string  `json:"answer_sha256"`
	Score     float64 `json:"score"`
	Reply     string  `json:"reply"`
}

// JudgePrompt is what the judge is asked; {rubric}, {question}, {reference},
// {answer} and {max} are filled in.
const JudgePrompt = `You are grading an answer to a task against a rubric.

Task:
{question}

Reference answer (may be empty):
{reference}

Answer to grade:
{answer}

Rubric:
{rubric}

Explain your grade in at most three sentences, then end with a line "Score: N", where N is an integer from 0 to {max}.`

var reScore = regexp.MustCompile(`(?i)score\s*[:=]\s*\**\s*([0-9]+(?:\.[0-9]+)?)`)

// parseScore reads the last "Score: N" of a reply and scales it to [0, 1].
func parseScore(reply string, max int) (float64, error) {
	all := reScore.FindAllStringSubmatch(reply, -1)
	if len(all) == 0 {
		return 0, fmt.Errorf(`the judge's reply has no "Score: N" line`)
	}
	v, err := strconv.ParseFloat(all[len(all)-1][1], 64)
	if err != nil || v < 0 || v > float64(max) {
		return 0, fmt.Errorf("the judge's score %s is outside 0…%d", all[len(all)-1][1], max)
	}
	return v / float64(max), nil
}

func (j *Judge) open() error {
	if j.have != nil {
		return nil
	}
	j.have = map[string]judgeRecord{}
	if j.Cache == "" {
		return nil
	}
	f, err := os.OpenFile(j.Cache, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("judge cache: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("judge cache: %w", err)
	}
	good := 0
	for n, line := range bytes.SplitAfter(data, []byte("\n")) {
		if len(line) == 0 {
			break
		}
		var rec judgeRecord
		if line[len(line)-1] != '\n' || json.Unmarshal(line, &rec) != nil || rec.Key == "" {
			if good+len(line) < len(data) {
				f.Close()
				return fmt.Errorf("judge cache %s line %d is not a judgement: not a file kdnative wrote; give another cache", j.Cache, n+1)
			}
			break // a torn last line: a run killed mid-write; it is judged again
		}
		j.have[rec.Key] = rec
		good += len(line)
	}
	if err := f.Truncate(int64(good)); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Seek(int64(good), io.SeekStart); err != nil {
		f.Close()
		return err
	}
	j.cache = f
	return nil
}

// Close closes the cache file.
func (j *Judge) Close() error {
	if j.cache == nil {
		return nil
	}
	err := j.cache.Close()
	j.cache = nil
	return err
}

func (j *Judge) save(rec judgeRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.have[rec.Key] = rec
	if j.cache == nil {
		return nil
	}
	line, _ := json.Marshal(rec)
	_, err := j.cache.Write(append(line, '\n')) // one write: a kill loses at most this line
	return err
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// question is the task as the judge sees it.
func question(ex *Example) string {
	if ex.Prompt != nil {
		return *ex.Prompt
	}
	var b strings.Builder
	for _, m := range ex.Messages {
		fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
	}
	return strings.TrimSpace(b.String())
}

func judgePrompt(ex *Example, answer string) string {
	return strings.NewReplacer("{question}", question(ex), "{reference}", strings.Join(ex.Answers, "\n"),
		"{answer}", answer, "{rubric}", ex.Rubric, "{max}", strconv.Itoa(ex.MaxScore)).Replace(JudgePrompt)
}

// judgeAll scores samples[i] (an answer to rows[i].ex) in place. A request
// that still fails after the client's retries, or a reply without a usable
// score, leaves its sample unscored with the reason; an error that no retry
// can mend (a refused key, a wrong URL or model) stops the run.
func (j *Judge) judgeAll(ctx context.Context, rows []genRow, samples []Sample, done func(int)) error {
	if err := j.open(); err != nil {
		return err
	}
	workers := j.Concurrency
	if workers <= 0 {
		workers = 4
	}
	maxTok := j.MaxTokens
	if maxTok <= 0 {
		maxTok = 512
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		fatal error
		fmu   sync.Mutex
	)
	next := make(chan int)
	zero := 0.0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ex, s := rows[i].ex, &samples[i]
				prompt := judgePrompt(ex, s.Output)
				key := sha(j.Client.Model + "\x00" + prompt)
				j.mu.Lock()
				rec, ok := j.have[key]
				j.mu.Unlock()
				if !ok {
					resp, err := j.Client.Chat(ctx, elicit.ChatRequest{Messages: []elicit.Message{{Role: "user", Content: prompt}},
						MaxTokens: maxTok, Temperature: &zero})
					if err != nil {
						if elicit.Fatal(err) {
							fmu.Lock()
							if fatal == nil {
								fatal = err
							}
							fmu.Unlock()
							cancel()
						}
						s.Unscored = "judge: " + err.Error()
						done(1)
						continue
					}
					reply := resp.Choices[0].Message.Content
					score, err := parseScore(reply, ex.MaxScore)
					if err != nil {
						s.Unscored, s.Judgement = err.Error(), reply
						done(1)
						continue
					}
					rec = judgeRecord{Key: key, ID: ex.ID, AnswerSHA: sha(s.Output), Score: score, Reply: reply}
					if err := j.save(rec); err != nil {
						fmu.Lock()
						if fatal == nil {
							fatal = fmt.Errorf("judge cache: %w", err)
						}
						fmu.Unlock()
						cancel()
					}
				}
				sc := rec.Score
				s.Score, s.Judgement, s.Correct = &sc, rec.Reply, sc >= 1
				done(1)
			}
		}()
	}
	for i := range rows {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if fatal != nil {
		return fmt.Errorf("judge: %w", fatal)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}
