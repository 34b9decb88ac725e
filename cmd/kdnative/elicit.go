package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/elicit"
)

func elicitCommand() *cli.Command {
	return &cli.Command{
		Name:  "elicit",
		Usage: "get the teacher's knowledge into training data",
		Subcommands: []*cli.Command{{
			Name:  "curate",
			Usage: "filter generated JSONL by length and script and remove exact and near duplicates",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "input", Required: true},
				&cli.StringFlag{Name: "output", Required: true},
				&cli.StringFlag{Name: "dropped", Usage: "also write the dropped records, each with its reason"},
				&cli.StringSliceFlag{Name: "field", Usage: "record fields judged (default prompt and response, or messages)"},
				&cli.IntFlag{Name: "min-chars"},
				&cli.IntFlag{Name: "max-chars"},
				&cli.StringFlag{Name: "script", Usage: "keep records written in this Unicode script (latin, han, cyrillic, …)"},
				&cli.Float64Flag{Name: "script-fraction", Value: 0.8, Usage: "the share of letters that must be in --script"},
				&cli.Float64Flag{Name: "near-dup", Value: 0.8, Usage: "Jaccard similarity (word 5-grams, MinHash) at which a record is a near duplicate; 0 for exact duplicates only"},
			},
			Action: func(c *cli.Context) error {
				rep, err := elicit.Curate(elicit.CurateConfig{Input: c.String("input"), Output: c.String("output"),
					Dropped: c.String("dropped"), Fields: c.StringSlice("field"), MinChars: c.Int("min-chars"),
					MaxChars: c.Int("max-chars"), Script: c.String("script"), ScriptFraction: c.Float64("script-fraction"),
					NearDup: c.Float64("near-dup")})
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, rep)
				return nil
			},
		}},
	}
}
