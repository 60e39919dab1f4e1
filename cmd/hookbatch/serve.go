package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/relay"
	"github.com/rs/zerolog"
)

// configPath picks the config file: the flag, else $HOOKBATCH_CONFIG, else
// ./hookbatch.yaml when it exists; "" means built-in defaults.
func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("HOOKBATCH_CONFIG"); env != "" {
		return env
	}
	if _, err := os.Stat("hookbatch.yaml"); err == nil {
		return "hookbatch.yaml"
	}
	return ""
}

func loadConfig(path string) (config.Config, error) {
	if path == "" {
		cfg := config.Default()
		if ps := cfg.Validate(); len(ps) > 0 {
			return cfg, &config.Error{Problems: ps}
		}
		return cfg, nil
	}
	return config.Load(path)
}

// reload re-reads the config file on SIGHUP; a bad file is rejected with
// its problems and the running config stays.
func reload(r *relay.Relay, path string, log zerolog.Logger) {
	if path == "" {
		log.Warn().Msg("SIGHUP: no config file to reload (running on built-in defaults)")
		return
	}
	cfg, err := config.Load(path)
	if err != nil {
		log.Error().Str("config_file", path).Str("problems", err.Error()).Msg("SIGHUP: config rejected; the running config stays")
		return
	}
	if err := r.Reload(cfg); err != nil {
		log.Error().Err(err).Msg("SIGHUP: reload failed; the running config stays")
	}
}

func serve(args []string) int {
	fset := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgFlag := fset.String("config", "", "config `file` (default $HOOKBATCH_CONFIG, else ./hookbatch.yaml if present, else built-in defaults)")
	if code, done := parseFlags(fset, args, os.Stderr, "serve [-config FILE]", "Run the relay."); done {
		return code
	}
	path := configPath(*cfgFlag)
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hookbatch: %v\n", err) // names the file
		return 1
	}
	log := newLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	log.Info().Str("version", version).Str("config_file", path).Interface("config", cfg.Fields()).Msg("effective config")
	for _, w := range cfg.Warnings() {
		log.Warn().Str("path", w.Path).Msg(w.Msg)
	}

	r, err := relay.New(cfg, log, version)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := r.Start(); err != nil {
		log.Error().Err(err).Msg("cannot start")
		_ = r.Close(context.Background())
		return 1
	}
	var sig os.Signal
	for sig == nil {
		select {
		case sig = <-stop:
		case <-hup:
			reload(r, path, log)
		}
	}
	log.Info().Str("signal", sig.String()).Str("shutdown_timeout", cfg.ShutdownTimeout.String()).Msg("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := r.Close(ctx); err != nil && !errors.Is(err, fs.ErrClosed) {
		log.Error().Err(err).Msg("shutdown")
		return 1
	}
	log.Info().Msg("stopped")
	return 0
}
